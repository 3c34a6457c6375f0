"""Import a knowledge graph of named triples: ``python -m tml.projects.twhin.import_kg``.

Thin command over `tools.import_kg` (its docstring lists the files written and the steps).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tml.core.files import OutputExistsError, add_overwrite_flag
from tml.projects.twhin.models.operators import OPERATORS
from tml.projects.twhin.tools.import_kg import DELIMITERS, KgImportError, format_summary, import_kg


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tml.projects.twhin.import_kg",
        description="Import a knowledge graph of (head, relation, tail) names into parquet "
        "edges, id vocabularies and a runnable training config.",
    )
    p.add_argument("--train", required=True, metavar="FILE", help="training triples")
    p.add_argument("--valid", metavar="FILE", help="validation triples (optional)")
    p.add_argument("--test", metavar="FILE", help="test triples (optional)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory to create")
    p.add_argument(
        "--operator",
        default="translation",
        help=f"relation operator of every relation (default: translation; one of "
        f"{', '.join(OPERATORS)})",
    )
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default: 64)")
    p.add_argument(
        "--types",
        metavar="FILE",
        help="name<delimiter>type per line: one table per type (default: one table 'entity')",
    )
    p.add_argument(
        "--delimiter",
        type=str.upper,
        choices=sorted(DELIMITERS),
        default="TAB",
        help='field separator of all input files (default: TAB; COMMA allows "quoted" names)',
    )
    p.add_argument("--header", action="store_true", help="skip the first line of every input file")
    p.add_argument(
        "--previous",
        metavar="DIR",
        help="an earlier import's output: every name keeps its id there, new names get new ids "
        "at the end of their table (the next version of a graph)",
    )
    add_overwrite_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit code 2 with one `error:` line on bad input or existing output."""
    args = _build_parser().parse_args(argv)
    try:
        summary = import_kg(
            args.train,
            args.valid,
            args.test,
            out=args.out,
            operator=args.operator,
            dim=args.dim,
            types=args.types,
            delimiter=DELIMITERS[args.delimiter],
            header=args.header,
            overwrite=args.overwrite,
            previous=args.previous,
        )
    except (KgImportError, OutputExistsError) as exc:
        message = " ".join(str(exc).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
