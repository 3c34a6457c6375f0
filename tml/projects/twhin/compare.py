"""How far the embeddings moved between two versions: `python -m tml.projects.twhin.compare`.

    python -m tml.projects.twhin.compare --before D1 --after D2 [--table T] [-k 10]
        [--sample N] [--json]

D1 and D2 are save dirs (their `embeddings/`) or export folders. Over the entities present in
both, per table: neighbour overlap@k, the mean cosine after an orthogonal Procrustes alignment,
and the rank correlation of pairwise similarities (eval/drift.py says what each means).
"""

from __future__ import annotations

import argparse
import json
import sys

from tml.projects.twhin.eval.drift import compare_exports, format_drift


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--before", required=True, help="The earlier version's save dir.")
    parser.add_argument("--after", required=True, help="The later version's save dir.")
    parser.add_argument("--table", action="append", default=None,
                        help="A table to compare; repeatable (default: every shared table).")  # fmt: skip
    parser.add_argument("-k", type=int, default=10, help="Neighbours per entity (default 10).")
    parser.add_argument("--sample", type=int, default=1000,
                        help="Entities whose neighbours are compared (default 1000).")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    if args.k < 1 or args.sample < 1:
        parser.error("-k and --sample must be at least 1")
    try:
        results = compare_exports(args.before, args.after, args.table, args.k, args.sample)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"tables": [d.to_dict() for d in results]}))
    else:
        print(format_drift(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
