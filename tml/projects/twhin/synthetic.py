"""Write the synthetic Twitter-like graph: `python -m tml.projects.twhin.synthetic --out DIR`.

Thin command over `tools.synthetic.generator` (see its docstring for the files and options).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tml.core.files import OutputExistsError
from tml.projects.twhin.tools.synthetic import SCHEMAS, generate


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
    p.add_argument(
        "--num-entities",
        type=int,
        default=1_000_000,
        help="entities of the homogeneous schema (default: 1000000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--num-users", type=int, default=20000, help="user entities (default: 20000)")
    p.add_argument("--num-tweets", type=int, default=40000, help="tweet entities (default: 40000)")
    p.add_argument(
        "--num-advertisers", type=int, default=1000, help="advertiser entities (default: 1000)"
    )
    p.add_argument(
        "--num-edges",
        type=int,
        default=400000,
        help="total edges, train plus validation (default: 400000)",
    )
    p.add_argument(
        "--num-communities", type=int, default=20, help="planted communities (default: 20)"
    )
    p.add_argument(
        "--in-community",
        type=float,
        default=0.9,
        help="probability an edge stays inside the lhs entity's community (default: 0.9)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.02,
        help="fraction of edges held out for validation, at least 1 edge (default: 0.02)",
    )
    p.add_argument(
        "--rows-per-file",
        type=int,
        default=100000,
        help="edges per parquet file; also the generation chunk size (default: 100000)",
    )
    p.add_argument(
        "--row-group-size", type=int, default=20000, help="parquet row group size (default: 20000)"
    )
    p.add_argument(
        "--relation-mix",
        default=None,
        help="relative frequencies of the relations, comma-separated (default: the schema's, "
        "0.4,0.3,0.2,0.1 for twitter's follows,fav,retweet,click; 0.5,0.3,0.15,0.05 for "
        "homogeneous)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists and is not empty"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (2 on bad input or existing output)."""
    args = _build_parser().parse_args(argv)
    try:
        graph = generate(
            args.out,
            schema=args.schema,
            num_entities=args.num_entities,
            seed=args.seed,
            num_users=args.num_users,
            num_tweets=args.num_tweets,
            num_advertisers=args.num_advertisers,
            num_edges=args.num_edges,
            num_communities=args.num_communities,
            in_community=args.in_community,
            validation_fraction=args.validation_fraction,
            rows_per_file=args.rows_per_file,
            row_group_size=args.row_group_size,
            relation_mix=args.relation_mix,
            overwrite=args.overwrite,
        )
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
