"""A tune command's session: open (or continue) the study, run a worker, write the outputs.

The study is maximised validation MRR with Optuna's TPE sampler (multivariate, with a constant
liar so parallel workers do not sample the same point) and a pruner that compares trials at
the validation evaluations of their runs.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import optuna
from optuna.storages import RDBStorage

from tml.core.files import write_text_atomically
from tml.projects.twhin.tuning.outputs import (
    best_trial,
    format_table,
    write_best_config,
    write_trial_tables,
)
from tml.projects.twhin.tuning.report import SETTINGS_FILE, write_tune_report
from tml.projects.twhin.tuning.space import SearchSpace, describe
from tml.projects.twhin.tuning.storage import open_storage, redact
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder
from tml.projects.twhin.tuning.worker import TRIALS_DIR, TuneWorker, WorkerSettings

log = logging.getLogger("tml")

PRUNERS = ("median", "hyperband", "none")
SPACE_ATTR = "search_space"


@dataclass(frozen=True)
class TuneSettings:
    save_dir: Path
    storage_url: str
    study_name: str
    trials: int
    timeout_s: float | None
    jobs: int
    nproc_per_trial: int
    threads_per_trial: int
    pruner: str
    seed: int | None
    heartbeat_s: int


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruners act on evaluation numbers (1, 2, ...). The median pruner may stop a trial at
    its first evaluation: runs that start far below the others rarely catch up, and stopping them
    early is most of what pruning saves."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings, space: SearchSpace) -> tuple[optuna.Study, RDBStorage]:
    storage = open_storage(settings.storage_url, settings.heartbeat_s)
    sampler = optuna.samplers.TPESampler(
        seed=settings.seed, multivariate=True, group=True, constant_liar=True
    )
    study = optuna.create_study(
        storage=storage, study_name=settings.study_name, direction="maximize",
        sampler=sampler, pruner=make_pruner(settings.pruner), load_if_exists=True,
    )  # fmt: skip
    space_dump = space.to_yaml_dict()
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None:
        study.set_user_attr(SPACE_ATTR, space_dump)
    elif recorded != space_dump:
        log.warning("the search space differs from the one this study started with; TPE "
                    "keeps using the earlier trials where their parameters still fit")  # fmt: skip
    return study, storage


class Tuner:
    def __init__(self, settings: TuneSettings, builder: TrialConfigBuilder) -> None:
        self.settings = settings
        self.builder = builder
        self.stop = threading.Event()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            log.warning("%s: stopping the running trials (they checkpoint and are queued to "
                        "resume)", signal.Signals(signum).name)  # fmt: skip
        self.stop.set()

    def run(self) -> optuna.Study:
        settings = self.settings
        settings.save_dir.mkdir(parents=True, exist_ok=True)
        study, storage = open_study(settings, self.builder.space)
        self._describe(study)
        self._write_settings()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        worker = TuneWorker(study, storage, self.builder, WorkerSettings(
            save_dir=settings.save_dir, trials=settings.trials, timeout_s=settings.timeout_s,
            jobs=settings.jobs, nproc_per_trial=settings.nproc_per_trial,
            threads_per_trial=settings.threads_per_trial,
        ), self.stop)  # fmt: skip
        worker.seed_study(self.builder.base_point())
        worker.run()
        self.write_outputs(study)
        return study

    def write_outputs(self, study: optuna.Study) -> None:
        save_dir = self.settings.save_dir
        csv_path, json_path = write_trial_tables(study, save_dir)
        best_path = write_best_config(study, self.builder, save_dir)
        page = write_tune_report(study, save_dir)
        print(format_table(study), flush=True)
        best = best_trial(study)
        if best is not None:
            log.info("best: trial %d, validation MRR %.4f -> %s", best.number, best.value,
                     best_path)  # fmt: skip
        log.info("trials: %s, %s; runs: %s/<number>/", csv_path, json_path,
                 save_dir / TRIALS_DIR)  # fmt: skip
        log.info("report: %s", page)

    def _describe(self, study: optuna.Study) -> None:
        settings, builder = self.settings, self.builder
        log.info(
            "study %r in %s: %d trials so far, target %d; maximising validation MRR with TPE "
            "and the %s pruner", settings.study_name, redact(settings.storage_url),
            len(study.trials), settings.trials, settings.pruner,
        )  # fmt: skip
        log.info(
            "base config %s: %s train edges, %.3g epochs; evaluations every %.3g epochs",
            builder.base_path, f"{builder.length.train_edges:,}", builder.base_epochs,
            builder.eval_every_epochs,
        )  # fmt: skip
        for parameter in builder.space.parameters:
            log.info("  tunes %s: %s", parameter.key, describe(parameter))
        log.info(
            "this worker runs %d trial(s) at a time, %d process(es) x %d thread(s) each%s; "
            "trials write to %s/<number>/", settings.jobs, settings.nproc_per_trial,
            settings.threads_per_trial,
            f", no new trials after {settings.timeout_s:.0f} s" if settings.timeout_s else "",
            settings.save_dir / TRIALS_DIR,
        )  # fmt: skip

    def _write_settings(self) -> None:
        settings = self.settings
        record = {
            "study_name": settings.study_name,
            "storage": redact(settings.storage_url),
            "base_config": str(self.builder.base_path),
            "search_space": self.builder.space.to_yaml_dict(),
            "eval_every_epochs": self.builder.eval_every_epochs,
            "pruner": settings.pruner,
        }
        write_text_atomically(
            settings.save_dir / SETTINGS_FILE, json.dumps(record, indent=1) + "\n"
        )
