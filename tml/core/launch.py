"""`python -m tml.core.launch [torchrun options] SCRIPT [ARGS]`: torchrun with two job policies.

torchrun restarts a failed worker group (`--max_restarts`), and on SIGTERM it kills the workers
and exits non-zero. Long jobs on shared clusters need two things to go differently:

* SIGTERM (Kubernetes deleting a pod, Slurm preempting or reaching the time limit) asks the job
  to stop: it is forwarded to the workers, which checkpoint at the next step boundary and exit 0
  (tml.core.preemption), and so does the job. Workers still running GRACE_PERIOD_S seconds
  later (default 30) are killed, and the job exits 1.
* A worker that exits with INPUT_ERROR (bad config, data, save dir or checkpoint) is not
  restarted, since a restart would meet the same input: the job ends at once with that exit
  code, and the worker's `error:` line is the message. Other failures restart the group as
  torchrun does (`--max_restarts`), its survivors killed at once rather than asked to stop.

Everything else is torchrun's own: options, rendezvous, restarts after crashes, logs.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import torch.distributed.launcher.api as launcher_api
from torch.distributed.elastic.agent.server.api import RunResult, WorkerGroup, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from tml.core.distributed import INPUT_ERROR
from tml.core.preemption import STOP_ENV

GRACE_ENV = "GRACE_PERIOD_S"
DEFAULT_GRACE_PERIOD_S = 30


def process_children() -> dict[int, list[int]]:
    """Parent pid -> pids of its children, for every process in /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


class TrainerAgent(LocalElasticAgent):
    """torchrun's agent, except for how a failed worker group ends."""

    def _monitor_workers(self, worker_group: WorkerGroup) -> RunResult:
        """A worker exiting with INPUT_ERROR uses up the restarts: the job ends."""
        result = super()._monitor_workers(worker_group)
        if any(failure.exitcode == INPUT_ERROR for failure in result.failures.values()):
            self._remaining_restarts = 0
        return result

    def _stop_workers(self, worker_group: WorkerGroup) -> None:
        """SIGKILL the survivors of a failed group: for them SIGTERM means "checkpoint at the
        next step", which their broken process group cannot do, so it would only cost the 30 s
        shutdown timeout. A healthy group (restarted because nodes joined) gets SIGTERM, and
        checkpoints where it stands."""
        failed = worker_group.state in {WorkerState.FAILED, WorkerState.UNHEALTHY}
        self._shutdown(signal.SIGKILL if failed else signal.SIGTERM)


class GracefulStop:
    """SIGTERM handler of the launcher: forward, then give the workers `grace_s` seconds."""

    def __init__(self, grace_s: int) -> None:
        self.grace_s = grace_s
        self.expired = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if os.environ.get(STOP_ENV) == "1":
            return  # already stopping
        os.environ[STOP_ENV] = "1"  # workers (re)started from now on stop at their first step
        workers = process_children().get(os.getpid(), [])
        print(
            f"launch: SIGTERM: asking {len(workers)} workers to checkpoint and stop "
            f"(grace period {self.grace_s} s)",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        signal.signal(signal.SIGALRM, self.on_grace_expired)
        signal.alarm(self.grace_s)

    def on_grace_expired(self, signum: int, frame: FrameType | None) -> None:
        self.expired = True
        # Raised inside torchrun's agent loop: it kills the workers and ends the run.
        raise SignalException("grace period expired", sigval=signal.SIGKILL)


def grace_period_s() -> int:
    value = os.environ.get(GRACE_ENV, str(DEFAULT_GRACE_PERIOD_S))
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"{GRACE_ENV}={value} is not a positive number of seconds")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    try:
        stop = GracefulStop(grace_period_s())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return INPUT_ERROR
    args = parse_args(argv)
    # SIGTERM is handled here: torchrun's own handler would kill the workers at once.
    handled = [name for name in args.signals_to_handle.split(",") if name.strip() != "SIGTERM"]
    args.signals_to_handle = ",".join(handled)
    signal.signal(signal.SIGTERM, stop.on_sigterm)
    # torch 2.13's torchrun keeps one TCPStore across restarts of the worker group, and the
    # restarted workers' process group finds the previous attempt's addresses in it (gloo:
    # "connectFullMesh failed ... Connection refused"). A store per attempt avoids that.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    launcher_api.LocalElasticAgent = TrainerAgent  # the class torchrun's launcher instantiates
    try:
        run(args)
    except ChildFailedError as exc:
        if any(failure.exitcode == INPUT_ERROR for failure in exc.failures.values()):
            return INPUT_ERROR  # the worker printed the `error:` line; no restart was made
        raise
    except SignalException:
        if not stop.expired:
            raise
        print(
            f"error: the workers did not stop within {stop.grace_s} s of SIGTERM and were "
            f"killed; raise {GRACE_ENV} (and the scheduler's grace period with it)",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return 1
    finally:
        signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
