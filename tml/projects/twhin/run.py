"""Entry point: `torchrun ... tml/projects/twhin/run.py --config_yaml_path=P --save_dir=D`.

Parses flags, loads the config, checks inputs, starts the process group, trains, ends cleanly.
Exit codes: 0 done (or stopped by SIGTERM after a checkpoint), 2 bad config / save dir / data /
checkpoint (one `error:` line; `tml.core.launch` does not restart those), 1 failure while training.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

# Must be set before torch loads OpenMP: spin-waiting threads made small CPU boxes 10-40x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as a script by torchrun: make `tml` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import pydantic  # noqa: E402

from tml.core.checkpoint import CheckpointError  # noqa: E402
from tml.core.config import ConfigError, format_validation_error, load_config  # noqa: E402
from tml.core.distributed import (  # noqa: E402
    INPUT_ERROR,
    abort_job,
    configure_threads,
    exit_process,
    init_distributed,
    shutdown,
)
from tml.core.log_setup import setup_logging  # noqa: E402
from tml.core.preemption import install_stop_handler  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.data.files import DataError  # noqa: E402
from tml.projects.twhin.training.preflight import SaveDirError, prepare  # noqa: E402
from tml.projects.twhin.training.trainer import run_training  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # allow_abbrev=False: torchrun users pass full flag names; prefixes would clash with torchrun's.
    parser = argparse.ArgumentParser(description="Train TwHIN embeddings.", allow_abbrev=False)
    parser.add_argument("--config_yaml_path", required=True, help="YAML config file.")
    parser.add_argument("--save_dir", default=None, help="Overrides training.save_dir.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    install_stop_handler()  # SIGTERM from here on: checkpoint at the next step, exit 0
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    setup_logging(rank)
    try:
        config = load_config(TwhinConfig, args.config_yaml_path)
        if args.save_dir:
            try:
                config.training.save_dir = args.save_dir
            except pydantic.ValidationError as exc:
                raise ConfigError(f"--save_dir: {format_validation_error(exc)}") from None
        configure_threads(config.runtime.threads_per_rank, local_world_size)
        run = prepare(config, rank, world_size)
    except (ConfigError, SaveDirError, DataError, ValueError) as exc:
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # every rank fails alike; say it once
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return INPUT_ERROR
    ctx = init_distributed(config.runtime.collective_timeout_s)
    if config.runtime.enable_tensorfloat32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        run_training(run, ctx)
    except (DataError, ValueError) as exc:
        abort_job(f"{exc}", INPUT_ERROR)
    except CheckpointError as exc:  # e.g. a full disk: worth a restart, unlike bad input
        abort_job(f"{exc}", 1)
    except Exception:  # one rank failing must end the job, not leave the others in a collective
        traceback.print_exc()
        abort_job(f"rank {ctx.rank} failed; see the traceback above", 1)
    shutdown()
    return 0


if __name__ == "__main__":
    exit_process(main())  # every output is closed by now
