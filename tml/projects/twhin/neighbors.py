"""Nearest neighbours of entities by their exported embeddings.

    python -m tml.projects.twhin.neighbors --save_dir D --table user --query NAME_OR_ID
        [--query ...] [--relation fav [--target tweet]] [-k 10]
        [--index auto|exact|faiss] [--nprobe N] [--json]

Without --relation: the most similar entities of the same table by cosine similarity. With
--relation R: the best candidates for R by the trained score, comparator(op_R(e_lhs), e_rhs):
for a query on R's lhs side, op_R(query) against every rhs entity; for a query on the rhs side,
every lhs entity (with reciprocal relations: rev_R(query) against the lhs table). The query
itself is never its own neighbour.

Reads `D/config.yaml` and `D/embeddings/` (names where the graph has a vocabulary, relation
parameters from relations.parquet) lazily: the `npy` export when there is one (else the
parquet), a row window at a time, and only the names it prints. The search is exact (every
candidate scored) unless --index faiss, or --index auto and the target table has
LARGE_TABLE_ROWS rows or more; the faiss index is built once from row windows, kept under
`D/index/` and memory-mapped when reused (search/backends.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from tml.core.config import ConfigError
from tml.projects.twhin.search.neighbors import (
    INDEX_CHOICES,
    LARGE_TABLE_ROWS,
    find_neighbors,
    format_text,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir (after export).")
    parser.add_argument("--table", required=True, help="The query entities' table.")
    parser.add_argument("--query", required=True, action="append",
                        help="An entity name (where the graph has names) or id; repeatable.")  # fmt: skip
    parser.add_argument("--relation", default=None, help="Score candidates for this relation.")
    parser.add_argument("--target", default=None, help="Table of the candidates (with --relation: "
                        "its other side, the default).")  # fmt: skip
    parser.add_argument("-k", type=int, default=10, help="Neighbours per query (default 10).")
    parser.add_argument("--index", choices=INDEX_CHOICES, default="auto",
                        help=f"exact, faiss, or auto: faiss from {LARGE_TABLE_ROWS:,} rows.")  # fmt: skip
    parser.add_argument("--nprobe", type=int, default=None,
                        help="IVF clusters searched per query (faiss; more is slower, closer).")  # fmt: skip
    parser.add_argument("--nlist", type=int, default=None,
                        help="IVF clusters when building the index (0: flat, exact).")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be at least 1")
    try:
        result = find_neighbors(
            args.save_dir, args.table, args.query, relation=args.relation, target=args.target,
            k=args.k, index=args.index, nprobe=args.nprobe, nlist=args.nlist,
        )  # fmt: skip
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
