"""One trial = one normal training run of `run.py` in a subprocess, watched through its metrics.

The run writes `metrics.jsonl` like any other; each validation record (`split: validation`,
`mrr`) is handed to `on_evaluation`, which reports it to Optuna and says whether to prune. A
finished trial's value is its last validation MRR, or, when the run kept a best checkpoint
(`training.early_stopping`), that checkpoint's: the model the run exported. A
pruned or interrupted run is asked to stop with SIGTERM: the trainer checkpoints and exits 143
(or 0 when it had just finished), so the trial's save dir can be resumed or exported like any
run. The process is tied to the tuner: if the tuner dies, the kernel sends the run SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from tml.core.checkpoint import CheckpointError, read_best
from tml.projects.twhin.artifacts.run_dir import RunDir

log = logging.getLogger("tml")

RUN_PY = Path(__file__).resolve().parents[1] / "run.py"
METRIC = "mrr"
POLL_S = 0.5
# Exit codes of run.py / tml.core.launch (README, "Training with torchrun").
BAD_INPUT = 2
SIGTERM_EXITS = (0, 128 + signal.SIGTERM, -signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


class Outcome(StrEnum):
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the tuner was asked to stop; the run can be resumed


@dataclass
class TrialResult:
    outcome: Outcome
    value: float | None = None
    reason: str = ""
    evaluations: dict[int, float] = field(default_factory=dict)  # evaluation number -> MRR
    last_step: int = 0


# Runs in the child, then execs the run: the kernel sends it SIGTERM (checkpoint and stop) when
# the tuner dies, even by SIGKILL (Linux PR_SET_PDEATHSIG). A small exec wrapper instead of
# Popen's preexec_fn, which is unsafe in a process with threads.
_TIED_TO_TUNER = f"""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the tuner died before the tie was made
os.execv(sys.argv[2], sys.argv[2:])
"""


class MetricsFollower:
    """Reads the complete lines a run appended to its metrics.jsonl since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new_records(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next call
        self._offset += len(complete)
        records = []
        for line in complete.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line of a killed run
        return records


def run_command(config_path: Path, save_dir: Path, nproc: int) -> list[str]:
    """run.py directly for one process; the repo's torchrun launcher for several."""
    flags = [f"--config_yaml_path={config_path}", f"--save_dir={save_dir}"]
    if nproc == 1:
        return [sys.executable, str(RUN_PY), *flags]
    launcher = [sys.executable, "-m", "tml.core.launch", "--standalone", "--nnodes", "1"]
    return [*launcher, "--nproc_per_node", str(nproc), str(RUN_PY), *flags]


class TrialRun:
    """Runs one trial's training and turns its exit into a `TrialResult`."""

    def __init__(
        self,
        command: list[str],
        save_dir: Path,
        eval_every_steps: int,
        stop: threading.Event,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.save_dir = save_dir
        self.eval_every_steps = eval_every_steps
        self.stop = stop
        self.env = env
        self.log_path = save_dir / "train.log"

    def run(
        self, on_evaluation: Callable[[int, float], bool], lock: IO | None = None
    ) -> TrialResult:
        """`on_evaluation(number, mrr)` returns True to prune. `lock`, an open file the run
        inherits, stays held until the run's last process exits."""
        follower = MetricsFollower(RunDir.at(self.save_dir).metrics)
        result = TrialResult(Outcome.COMPLETE)
        signalled: Outcome | None = None
        with open(self.log_path, "ab") as log_file:
            tied = [sys.executable, "-c", _TIED_TO_TUNER, str(os.getpid()), *self.command]
            process = subprocess.Popen(
                tied, stdout=log_file, stderr=subprocess.STDOUT, env=self.env,
                pass_fds=(lock.fileno(),) if lock else (),
            )  # fmt: skip
            while True:
                exited = process.poll() is not None
                for record in follower.new_records():
                    # Once stopping, later evaluations are kept but not reported: the study saw
                    # the one it pruned at (a fast run may have written several per poll).
                    report = on_evaluation if signalled is None else None
                    if self._take(record, result, report):
                        signalled = Outcome.PRUNED
                        process.send_signal(signal.SIGTERM)
                if exited:
                    break
                if self.stop.is_set() and signalled is None:
                    signalled = Outcome.INTERRUPTED
                    process.send_signal(signal.SIGTERM)
                if signalled is None:
                    self.stop.wait(POLL_S)
                else:  # stopping: the run checkpoints, then its last records are read
                    process.wait()
        return self._finish(result, process.returncode, signalled)

    def _take(
        self,
        record: dict[str, Any],
        result: TrialResult,
        on_evaluation: Callable[[int, float], bool] | None,
    ) -> bool:
        """Record a validation MRR (and report it, unless `on_evaluation` is None). An evaluation seen twice (a resumed run repeats the steps
        after its checkpoint) is reported once; its latest value is the one that counts."""
        if record.get("split") != "validation" or not isinstance(record.get(METRIC), int | float):
            return False
        step = int(record["step"])
        number = -(-step // self.eval_every_steps)  # the end of a run may fall between two
        result.last_step = max(result.last_step, step)
        result.value = float(record[METRIC])
        if number in result.evaluations:
            result.evaluations[number] = result.value
            return False
        result.evaluations[number] = result.value
        return on_evaluation is not None and on_evaluation(number, result.value)

    def _finish(self, result: TrialResult, code: int, signalled: Outcome | None) -> TrialResult:
        if signalled is not None and code in SIGTERM_EXITS:
            result.outcome = signalled
            result.reason = "stopped by the pruner" if signalled is Outcome.PRUNED else (
                "the tuner was stopped; the run checkpointed and can resume"
            )  # fmt: skip
            return result
        if code == 0:
            if result.value is None:
                return self._failed(result, "the run wrote no validation MRR to metrics.jsonl")
            return self._best_checkpoints_value(result)
        if code == BAD_INPUT:
            return self._failed(result, f"bad input (exit 2): {self._error_line()}")
        if code in SIGTERM_EXITS:
            return self._failed(result, "stopped by a SIGTERM the tuner did not send")
        return self._failed(result, f"training failed (exit {code}); see {self.log_path}")

    def _best_checkpoints_value(self, result: TrialResult) -> TrialResult:
        """With early stopping the run exported its best checkpoint: score that one's MRR."""
        try:
            best = read_best(RunDir.at(self.save_dir).checkpoints)
        except CheckpointError as exc:
            return self._failed(result, str(exc))
        value = (best or {}).get("metrics", {}).get(METRIC)
        if isinstance(value, int | float):
            result.value = float(value)
        return result

    def _failed(self, result: TrialResult, reason: str) -> TrialResult:
        result.outcome, result.reason = Outcome.FAILED, reason
        return result

    def _error_line(self) -> str:
        """The run's `error:` line, which names the bad field, file or checkpoint."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"see {self.log_path}"
        errors = [line for line in lines if line.startswith("error:")]
        return errors[-1].removeprefix("error:").strip() if errors else f"see {self.log_path}"


def child_environment(threads: int) -> dict[str, str]:
    """The tuner's environment, with the thread count of one trial."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env
