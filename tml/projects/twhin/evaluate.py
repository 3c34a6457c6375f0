"""Evaluate a trained run on its validation or test edges: filtered MRR, Hits@k, mean rank, AUC.

    python -m tml.projects.twhin.evaluate --save_dir D [--config_yaml_path P]
        [--split valid|test] [--checkpoint step_N]

Offline (no process group): full tables are assembled from the sharded checkpoint, whatever
world size wrote it (eval/evaluator.py). Prints one JSON line and writes it to
`D/eval/<split>.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tml.core.config import ConfigError, load_config
from tml.core.files import write_text_atomically
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.files import DataError
from tml.projects.twhin.eval.evaluator import SPLITS, evaluate_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--config_yaml_path", default=None, help="Config (default: the run's config.yaml)."
    )
    parser.add_argument("--split", choices=sorted(SPLITS), default="valid")
    parser.add_argument("--checkpoint", default=None, help="step_N (default: the newest).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    save_dir = Path(args.save_dir)
    try:
        config = load_config(TwhinConfig, args.config_yaml_path or RunDir(save_dir).config)
        result = evaluate_checkpoint(save_dir, config, args.split, args.checkpoint)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    line = json.dumps(result)
    out = RunDir(save_dir).evaluation(args.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
