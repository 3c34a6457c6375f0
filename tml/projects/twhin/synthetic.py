"""Write the synthetic Twitter-like graph: `python -m tml.projects.twhin.synthetic --out DIR`.

Thin command over `tools.synthetic.generate` (tools/synthetic/ says what is written and how).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tml.core.files import OutputExistsError, add_overwrite_flag
from tml.projects.twhin.tools.synthetic import SCHEMAS, generate, grow

_OPTIONS: tuple[tuple[str, type, object, str], ...] = (
    ("num_entities", int, 1_000_000, "entities of the homogeneous schema"),
    ("seed", int, 0, "random seed"),
    ("num_users", int, 20000, "user entities"),
    ("num_tweets", int, 40000, "tweet entities"),
    ("num_advertisers", int, 1000, "advertiser entities"),
    ("num_edges", int, 400000, "total edges, train plus validation"),
    ("num_communities", int, 20, "planted communities"),
    ("in_community", float, 0.9, "probability an edge stays inside the lhs entity's community"),
    ("validation_fraction", float, 0.02, "fraction of edges held out, at least 1 edge"),
    ("rows_per_file", int, 100000, "edges per parquet file; also the generation chunk size"),
    ("row_group_size", int, 20000, "parquet row group size"),
)
"""(`generate` argument, type, default, help) of the numeric options, `--num-users` style."""


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tml.projects.twhin.synthetic",
        description="Write a deterministic synthetic Twitter-like heterogeneous graph.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory to create")
    p.add_argument(
        "--schema",
        choices=sorted(SCHEMAS),
        default="twitter",
        help="tables and relations: twitter (user, tweet, advertiser; default) or homogeneous "
        "(one entity table, 4 relations: PyTorch-BigGraph's benchmark shape)",
    )
    for name, kind, default, text in _OPTIONS:
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    p.add_argument(
        "--relation-mix",
        default=None,
        help="relative frequencies of the relations, comma-separated (default: the schema's, "
        "0.4,0.3,0.2,0.1 for twitter's follows,fav,retweet,click; 0.5,0.3,0.15,0.05 for "
        "homogeneous)",
    )
    p.add_argument(
        "--grow-from",
        metavar="DIR",
        help="write the next version of the graph in DIR: its entities, ids and edges plus "
        "--new-fraction new entities per table and their edges (sizes come from DIR)",
    )
    p.add_argument(
        "--new-fraction",
        type=float,
        default=0.1,
        help="with --grow-from: new entities per table and new edges, as a fraction of DIR's "
        "(default: 0.1)",
    )
    add_overwrite_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (2 on bad input or existing output)."""
    args = _build_parser().parse_args(argv)
    options = {name: getattr(args, name) for name, _, _, _ in _OPTIONS}
    try:
        if args.grow_from:
            graph = grow(
                args.out, args.grow_from, new_fraction=args.new_fraction, seed=args.seed,
                in_community=args.in_community, rows_per_file=args.rows_per_file,
                row_group_size=args.row_group_size, overwrite=args.overwrite,
            )  # fmt: skip
        else:
            graph = generate(
                args.out, schema=args.schema, relation_mix=args.relation_mix,
                overwrite=args.overwrite, **options,
            )  # fmt: skip
    except (OutputExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote synthetic graph to {os.path.abspath(args.out)}: "
        f"{graph['num_train_edges']} train edges, "
        f"{graph['num_validation_edges']} validation edges"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
