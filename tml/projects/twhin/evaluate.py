"""Evaluate a trained run on its validation or test edges: filtered MRR, Hits@k, mean rank, AUC.

    python -m tml.projects.twhin.evaluate --save_dir D [--config_yaml_path P]
        [--split valid|test] [--checkpoint step_N|best|PATH]

Reads the checkpoint (written by any number of ranks) in row windows; no process ever holds a
whole table. On one process it streams every table; under torchrun
(`torchrun --nproc_per_node N -m tml.projects.twhin.evaluate ...`) each rank reads and scores its
1/N of the rows and the counts are summed (eval/sharded_ranking.py). Rank 0 prints one JSON line
and writes it to `D/eval/<split>.json`. Exit codes: 0 done, 2 bad config, data or checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see docs/stack.md

from tml.core.config import ConfigError, load_config  # noqa: E402
from tml.core.distributed import configure_threads, init_distributed, shutdown  # noqa: E402
from tml.core.files import write_text_atomically  # noqa: E402
from tml.core.log_setup import setup_logging  # noqa: E402
from tml.projects.twhin.artifacts.run_dir import RunDir  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.data.files import DataError  # noqa: E402
from tml.projects.twhin.eval.evaluator import SPLITS, evaluate_checkpoint  # noqa: E402

LAUNCHED = "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ
"""Started by torchrun: join its process group and split the rows between the ranks."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--config_yaml_path", default=None, help="Config (default: the run's config.yaml)."
    )
    parser.add_argument("--split", choices=sorted(SPLITS), default="valid")
    parser.add_argument(
        "--checkpoint", default=None,
        help="step_N, best (the best checkpoint of training.early_stopping) or a path "
        "(default: the newest).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if LAUNCHED:
        setup_logging(int(os.environ.get("RANK", 0)))  # rank 0 talks
    else:
        # force: an import (TorchRec) already gave the root logger a WARNING handler
        logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    save_dir = Path(args.save_dir)
    try:
        config = load_config(TwhinConfig, args.config_yaml_path or RunDir(save_dir).config)
        ctx = init_distributed(config.runtime.collective_timeout_s) if LAUNCHED else None
        if ctx is not None:
            configure_threads(config.runtime.threads_per_rank, ctx.local_world_size)
        result = evaluate_checkpoint(
            save_dir, config, args.split, args.checkpoint,
            rank=ctx.rank if ctx else 0, world_size=ctx.world_size if ctx else 1,
            device=ctx.device if ctx else None,
        )  # fmt: skip
    except (ConfigError, DataError, FileNotFoundError) as exc:
        if int(os.environ.get("RANK", 0)) == 0:  # every rank fails alike; say it once
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if ctx is not None:
        shutdown()
        if not ctx.is_chief:
            return 0
    line = json.dumps(result)
    out = RunDir(save_dir).evaluation(args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
