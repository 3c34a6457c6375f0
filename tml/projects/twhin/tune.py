"""Hyper-parameter search: `python -m tml.projects.twhin.tune --config_yaml_path P --save_dir D`.

Runs trials of the base config P with values sampled by Optuna (TPE), each a normal training
run in `D/trials/<number>/`, prunes the weak ones at their validation evaluations, and writes
the best config to `D/best.yaml`, the trials to `D/trials.csv` and `D/trials.json`, and plots to
`D/report/index.html`. The study lives in `D/study.db`; the same command continues it. With
`--storage postgresql://…` any number of these commands, on any machines, share one study.
See docs/tuning.md. Exit codes: 0 done, 1 no trial completed, 2 bad input, 143 stopped by
SIGTERM (running trials checkpoint and are queued to resume).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import optuna
import sqlalchemy
import yaml

from tml.core.config import ConfigError
from tml.projects.twhin.tuning.space import default_space, load_space
from tml.projects.twhin.tuning.storage import STORAGE_ENV, default_url, redact
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder
from tml.projects.twhin.tuning.tuner import PRUNERS, Tuner, TuneSettings, open_study

INPUT_ERROR = 2
STOPPED = 143


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tml.projects.twhin.tune", allow_abbrev=False,
        description="Tune a TwHIN config for validation MRR with Optuna (docs/tuning.md).",
    )  # fmt: skip
    add = p.add_argument
    # fmt: off
    add("--config_yaml_path", required=True, help="base config (needs validation_data)")
    add("--save_dir", required=True, help="tune dir: study, trials, best.yaml, report")
    add("--trials", type=int, default=30,
        help="trials the study should hold, over all workers (default 30)")
    add("--timeout", type=float, metavar="S",
        help="start no new trial after S seconds (running ones finish)")
    add("--storage", default=os.environ.get(STORAGE_ENV),
        help="Optuna RDB URL shared by workers, e.g. postgresql://user:pw@host/db "
        f"(default: ${STORAGE_ENV}, else sqlite:///D/study.db)")
    add("--study_name", help="default: the save dir's name")
    add("--search_space", metavar="FILE",
        help="search-space YAML (default: ranges derived from the base config)")
    add("--print_search_space", action="store_true",
        help="print the search space as YAML and exit (a start for a FILE)")
    add("--max_epochs", type=int,
        help="upper end of the default epochs range (default: the base config's)")
    add("--eval_every_epochs", type=float,
        help="validation cadence of every trial (default: the base config's)")
    add("--jobs", type=int, default=1, help="trials this worker runs at once")
    add("--nproc_per_trial", type=int, default=1,
        help="processes per trial (>1 runs tml.core.launch, torchrun)")
    add("--threads_per_trial", type=int,
        help="torch threads per trial process (default: cores / jobs / nproc)")
    add("--pruner", choices=PRUNERS, default="median")
    add("--seed", type=int, help="sampler seed (leave unset when several workers share a study)")
    add("--heartbeat_s", type=int, default=30,
        help="trials of a worker silent for 4x this long are failed and retried")
    add("--report", action="store_true",
        help="run no trial: rewrite best.yaml, the trials tables and the report")
    # fmt: on
    args = p.parse_args(argv)
    for name in ("trials", "jobs", "nproc_per_trial", "threads_per_trial", "max_epochs",
                 "heartbeat_s"):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be at least 1 (got {value})")
    return args


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s [tune] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger("tml").setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner logs each trial itself


def _build(args: argparse.Namespace) -> tuple[TrialConfigBuilder, TuneSettings]:
    """The config builder with its search space, and the session settings."""
    save_dir = Path(args.save_dir)
    builder = TrialConfigBuilder(
        args.config_yaml_path, world_size=args.nproc_per_trial,
        eval_every_epochs=args.eval_every_epochs,
    )  # fmt: skip
    if args.search_space:
        builder.space = load_space(args.search_space)
    else:
        max_epochs = args.max_epochs or math.ceil(builder.base_epochs)
        builder.space = default_space(builder.base, max_epochs)
    builder.check_space()
    threads = args.threads_per_trial or max(
        1, (os.cpu_count() or 1) // (args.jobs * args.nproc_per_trial)
    )
    settings = TuneSettings(
        save_dir=save_dir, storage_url=args.storage or default_url(save_dir),
        study_name=args.study_name or save_dir.resolve().name, trials=args.trials,
        timeout_s=args.timeout, jobs=args.jobs, nproc_per_trial=args.nproc_per_trial,
        threads_per_trial=threads, pruner=args.pruner, seed=args.seed,
        heartbeat_s=args.heartbeat_s,
    )  # fmt: skip
    return builder, settings


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return INPUT_ERROR


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging()
    try:
        builder, settings = _build(args)
    except ConfigError as exc:  # the base config, the search space or the train data
        return _error(str(exc))
    if args.print_search_space:
        print(yaml.safe_dump(builder.space.to_yaml_dict(), sort_keys=False), end="")
        return 0
    tuner = Tuner(settings, builder)
    try:
        if args.report:
            tuner.write_outputs(open_study(settings, builder.space)[0])
            return 0
        study = tuner.run()
    except sqlalchemy.exc.ArgumentError as exc:
        return _error(f"--storage: {exc}")
    except sqlalchemy.exc.OperationalError as exc:
        return _error(f"cannot use the study storage {redact(settings.storage_url)}: {exc.orig}")
    if tuner.stop.is_set():
        return STOPPED
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        print("error: no trial completed; see the reasons in trials.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
