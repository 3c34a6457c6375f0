"""A tune worker: takes trials from the study until it holds enough, runs each, records it.

Any number of workers (threads here, processes elsewhere) share one study. Each loop:
fail trials whose worker stopped beating (they come back as WAITING copies); under the study's
slot lock, take a WAITING trial or create one while the study has fewer than `trials`; run it as
a training run in `<save_dir>/trials/<number>/` (a retry runs in its original trial's dir and
resumes there); tell the study complete (its validation MRR), pruned or failed.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from tml.core.config import ConfigError
from tml.projects.twhin.tuning.space import format_values
from tml.projects.twhin.tuning.storage import TrialSlots, retry_later
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder
from tml.projects.twhin.tuning.trial_run import (
    Outcome,
    TrialResult,
    TrialRun,
    child_environment,
    run_command,
)

log = logging.getLogger("tml")

TRIALS_DIR = "trials"
TRIAL_CONFIG = "trial.yaml"
LOCK_FILE = ".tune.lock"


@dataclass(frozen=True)
class WorkerSettings:
    save_dir: Path
    trials: int  # the study's target: trials started, not counting retried failures
    timeout_s: float | None
    jobs: int  # trials this worker runs at once
    nproc_per_trial: int
    threads_per_trial: int


def trial_dir(save_dir: Path, trial: FrozenTrial) -> Path:
    """A trial's save dir; a retry of a failed trial reuses (and resumes) the original's."""
    origin = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return save_dir / TRIALS_DIR / str(trial.number if origin is None else origin)


def counted_trials(trials: list[FrozenTrial]) -> int:
    """Trials that count towards the target: all but failed ones that were queued again."""
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


class TuneWorker:
    def __init__(
        self,
        study: optuna.Study,
        storage: RDBStorage,
        builder: TrialConfigBuilder,
        settings: WorkerSettings,
        stop: threading.Event,
    ) -> None:
        self.study = study
        self.storage = storage
        self.builder = builder
        self.settings = settings
        self.stop = stop
        self.slots = TrialSlots(storage, study.study_name)
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._deadline = (
            time.monotonic() + settings.timeout_s if settings.timeout_s is not None else None
        )

    def seed_study(self, point: dict[str, Any]) -> None:
        """Queue `point` as the first trial of a study that has none (once, whichever worker
        comes first)."""
        with self.slots.hold():
            if point and not self.study.get_trials(deepcopy=False):
                self.study.enqueue_trial(point, user_attrs={"base": True})
                log.info("trial 0 runs the base config's own values: %s", format_values(point))

    def run(self) -> None:
        """Run `jobs` trial loops; returns when the study is done, on timeout or on stop."""
        threads = [
            threading.Thread(target=self._loop, name=f"tune-job-{i}", daemon=True)
            for i in range(self.settings.jobs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # the main thread stays free for signal handlers

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self._deadline is not None and time.monotonic() > self._deadline:
                log.info("--timeout reached: no new trials from this worker")
                return
            fail_stale_trials(self.study)
            with self.slots.hold():
                next_step = self._next_step()
                trial = self.study.ask() if next_step == "run" else None
            if trial is not None:
                self._run(trial)
            elif next_step == "done":
                return
            else:  # trials of other workers still run; one may die and come back as WAITING
                self.stop.wait(min(10, self.storage.get_heartbeat_interval() or 10))

    def _next_step(self) -> str:
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return "run"
        if counted_trials(trials) < self.settings.trials:
            return "run"
        if any(t.state == TrialState.RUNNING for t in trials):
            return "wait"
        return "done"

    def _frozen(self, trial: optuna.Trial) -> tuple[int, FrozenTrial]:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self._study_id, trial.number
        )
        return trial_id, self.storage.get_trial(trial_id)

    def _run(self, trial: optuna.Trial) -> None:
        trial_id, frozen = self._frozen(trial)
        heartbeat = _Heartbeat(self.storage, trial_id)
        heartbeat.start()
        try:
            result = self._train(trial, frozen)
        except Exception as exc:  # a bug here must not leave the trial RUNNING forever
            result = TrialResult(Outcome.FAILED, reason=f"tuner error: {exc!r}")
            log.exception("trial %d: tuner error", trial.number)
        finally:
            heartbeat.stop()
        self._tell(trial, trial_id, result)

    def _train(self, trial: optuna.Trial, frozen: FrozenTrial) -> TrialResult:
        save_dir = trial_dir(self.settings.save_dir, frozen)
        save_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("save_dir", str(save_dir))
        values = self.builder.space.sample(trial)
        try:
            config = self.builder.build(values, save_dir, self.settings.threads_per_trial)
        except ConfigError as exc:
            return TrialResult(Outcome.FAILED, reason=f"bad input: {exc}")
        config_path = save_dir / TRIAL_CONFIG
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        eval_every = int(config["training"]["eval_log_every_n"])
        run = TrialRun(
            run_command(config_path, save_dir, self.settings.nproc_per_trial), save_dir,
            eval_every, self.stop, child_environment(self.settings.threads_per_trial),
        )  # fmt: skip
        log.info("trial %d starts in %s: %s", trial.number, save_dir, format_values(values))

        def on_evaluation(number: int, mrr: float) -> bool:
            trial.report(mrr, number)
            prune = trial.should_prune()
            log.info("trial %d: validation MRR %.4f at evaluation %d%s", trial.number, mrr,
                     number, " -> pruned" if prune else "")  # fmt: skip
            return prune

        with open(save_dir / LOCK_FILE, "a") as lock:
            _lock_trial_dir(lock, save_dir)  # a dead worker's run may still be checkpointing
            return run.run(on_evaluation, lock)

    def _tell(self, trial: optuna.Trial, trial_id: int, result: TrialResult) -> None:
        trial.set_user_attr("evaluations", len(result.evaluations))
        trial.set_user_attr("last_step", result.last_step)
        if result.reason:
            trial.set_user_attr("reason", result.reason)
        if result.outcome is Outcome.COMPLETE:
            self.study.tell(trial, result.value)
        elif result.outcome is Outcome.PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
            if result.outcome is Outcome.INTERRUPTED:
                retry_later(self.study, self.storage.get_trial(trial_id))
        value = "" if result.value is None else f", validation MRR {result.value:.4f}"
        reason = f" ({result.reason})" if result.outcome is not Outcome.COMPLETE else ""
        log.info("trial %d %s%s%s", trial.number, result.outcome.value, value, reason)


def _lock_trial_dir(lock: IO, save_dir: Path) -> None:
    """Wait until no process holds the trial dir (the run inherits the lock, so it is held until
    the run's last process exits, even when its worker died first)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("waiting for the previous run in %s to stop", save_dir)
        fcntl.flock(lock, fcntl.LOCK_EX)


class _Heartbeat:
    """Records the trial's heartbeat every interval while it runs (Optuna's optimize() does
    this itself; the ask/tell loop here needs it too)."""

    def __init__(self, storage: RDBStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def start(self) -> None:
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self._storage.get_heartbeat_interval() or 60
        while not self._stopped.wait(interval):
            self._storage.record_heartbeat(self._trial_id)
