"""Entry point: `torchrun ... tml/projects/twhin/run.py --config_yaml_path=P --save_dir=D`.

Parses flags, loads the config, checks inputs, starts the process group, takes the save dir,
trains, ends cleanly. Exit codes (tml.core.errors): 0 finished (or nothing to do); 2 bad config,
save dir, data or checkpoint (one `error:` line; `tml.core.launch` does not restart those); 143 or
130 stopped by SIGTERM or SIGINT after writing a checkpoint; 1 failure while training.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Must be set before torch loads OpenMP: spin-waiting threads made small CPU boxes 10-40x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as a script by torchrun: make `tml` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tml.core import stop_request, timeline  # noqa: E402  (import no torch)

if __name__ == "__main__":
    stop_request.install_stop_handler()  # before the slow imports: a signal now is a stop request

from tml.core.device_check import exit_unless_expected_device  # noqa: E402

# TML_DEVICE (the CUDA image: cuda) before anything loads fbgemm-gpu, whose CUDA build cannot
# load without the NVIDIA driver: a machine without a usable GPU gets one `error:` line, exit 2.
exit_unless_expected_device()

import argparse  # noqa: E402
import logging  # noqa: E402
import traceback  # noqa: E402

import pydantic  # noqa: E402

from tml.core.checkpoint import CheckpointError  # noqa: E402
from tml.core.config import ConfigError, format_validation_error, load_config  # noqa: E402
from tml.core.distributed import (  # noqa: E402
    DistributedContext,
    abort_job,
    configure_threads,
    exit_process,
    init_distributed,
)
from tml.core.errors import EXIT_INPUT_ERROR, EXIT_OK, InputError, stop_exit_code  # noqa: E402
from tml.core.log_setup import setup_logging  # noqa: E402
from tml.core.parent_watch import say_if_orphaned, under_torchrun, watch_parent  # noqa: E402
from tml.core.save_dir_lock import hold_save_dir  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.training.preflight import PreparedRun, prepare  # noqa: E402
from tml.projects.twhin.training.trainer import run_training  # noqa: E402

log = logging.getLogger("tml.projects.twhin.run")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # allow_abbrev=False: torchrun users pass full flag names; prefixes would clash with torchrun's.
    parser = argparse.ArgumentParser(description="Train TwHIN embeddings.", allow_abbrev=False)
    parser.add_argument("--config_yaml_path", required=True, help="YAML config file.")
    parser.add_argument("--save_dir", default=None, help="Overrides training.save_dir.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    timeline.mark("imports")
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
        timeline.mark("config")
        run = prepare(config, rank, world_size)
        timeline.mark("data_plan")
        if under_torchrun():  # do not outlive the agent (tml.core.parent_watch)
            watch_parent(stop_request.grace_period_s())
    except InputError as exc:
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # every rank fails alike; say it once
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    ctx = init_distributed(config.runtime.collective_timeout_s)
    timeline.mark("process_group")
    if config.runtime.enable_tensorfloat32:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        finished = train_holding_the_save_dir(run, ctx)
    except InputError as exc:  # bad data found mid-epoch, a checkpoint that does not fit, ...
        abort_job(f"{exc}", EXIT_INPUT_ERROR)
    except CheckpointError as exc:  # e.g. a full disk: worth a restart, unlike bad input
        abort_job(f"{exc}")
    except Exception:  # one rank failing must end the job, not leave the others in a collective
        traceback.print_exc()
        abort_job(f"rank {ctx.rank} failed; see the traceback above")
    # No teardown (barrier, destroy_process_group, collecting DMP's gloo objects): the process
    # leaves with os._exit (exit_process), which never finalises them, and waiting for the other
    # ranks here only delayed every rank's exit until rank 0 had exported.
    timeline.mark("teardown")
    log.info("%s", timeline.summary())
    say_if_orphaned()
    return EXIT_OK if finished else stop_exit_code(stop_request.stop_signal())


def train_holding_the_save_dir(run: PreparedRun, ctx: DistributedContext) -> bool:
    """Train while this job holds the save dir (tml.core.save_dir_lock); False if stopped."""
    lock = hold_save_dir(run.run_dir.root, ctx.rank)
    try:
        return run_training(run, ctx)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    exit_process(main())  # every output is closed by now
