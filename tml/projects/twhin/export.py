"""Export trained embeddings from a checkpoint, offline (no process group).

    python -m tml.projects.twhin.export --save_dir D [--checkpoint step_N|best|PATH]
        [--format parquet|npy|tsv[,...]]

writes `D/embeddings/<table>.<format>` (formats and columns: artifacts/embedding_files.py), with
entity names where the graph has an importer vocabulary, and `D/embeddings/relations.parquet`
(name, lhs, rhs, operator, parameters as JSON). It reads the sharded checkpoint of any world size,
one row window at a time (artifacts/checkpoints.py), so tables larger than memory export too.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tml.core.config import ConfigError
from tml.projects.twhin.artifacts.embedding_files import FORMATS
from tml.projects.twhin.artifacts.export import export


def _formats(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or text!r}; choose from {', '.join(FORMATS)}"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="step_N under save_dir/checkpoints, best (the best checkpoint of "
        "training.early_stopping), or a path (default: the newest).",
    )
    parser.add_argument(
        "--format", type=_formats, default=["parquet"],
        help=f"One or more of {', '.join(FORMATS)}, comma-separated (default: parquet).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # force: an import may already have given the root logger a handler (then INFO lines vanished)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    try:
        files = export(args.save_dir, args.checkpoint, args.format)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for file in files:
        print(file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
