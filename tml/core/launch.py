"""`python -m tml.core.launch [torchrun options] SCRIPT [ARGS]`: torchrun with three job policies.

torchrun restarts a failed worker group (`--max_restarts`), and on SIGTERM it kills the workers
and exits non-zero. Long jobs on shared clusters need these to go differently:

* SIGTERM (Kubernetes deleting a pod, Slurm preempting or reaching the time limit) and SIGINT
  (Ctrl-C) ask the job to stop: the signal is forwarded to the workers, which checkpoint at the
  next step boundary and exit 128 + the signal (tml.core.stop_request), and so does the job:
  143 for SIGTERM, 130 for SIGINT. Workers still running GRACE_PERIOD_S seconds later (default
  30) are killed, and the job exits 1.
* Workers that stopped on request are not restarted, whatever `--max_restarts` says.
* A worker that exits with EXIT_INPUT_ERROR (bad config, data, save dir or checkpoint) is not
  restarted either, since a restart would meet the same input: the job ends at once with 2, and
  the worker's `error:` line is the message. Other failures restart the group as torchrun does
  (`--max_restarts`), its survivors killed at once rather than asked to stop; when the restarts
  are used up the job exits 1.

The exit codes are tml.core.errors'. Everything else is torchrun's own: options, rendezvous,
restarts after crashes, logs. Restarted workers connect although torch 2.13's torchrun shares
one store across attempts: each attempt gets a key space of its own (tml.core.attempt_store).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

from tml.core import stop_request
from tml.core.errors import (
    EXIT_FAILURE,
    EXIT_INPUT_ERROR,
    EXIT_OK,
    STOP_EXIT_CODES,
    STOP_SIGNALS,
    InputError,
    stop_exit_code,
)
from tml.core.stop_request import GRACE_ENV, STOP_ENV, grace_period_s

if __name__ == "__main__":  # a signal during the imports below stops the job before it starts
    for _signum in STOP_SIGNALS:
        signal.signal(_signum, lambda signum, frame: stop_request.request_stop(signum))

import torch.distributed.launcher.api as launcher_api  # noqa: E402
from torch.distributed.elastic.agent.server.api import (  # noqa: E402
    RunResult,
    WorkerGroup,
    WorkerState,
)
from torch.distributed.elastic.agent.server.local_elastic_agent import (  # noqa: E402
    LocalElasticAgent,
)
from torch.distributed.elastic.multiprocessing import SignalException  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: E402
from torch.distributed.run import parse_args, run  # noqa: E402


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


def ends_job(exit_codes: set[int]) -> bool:
    """Worker exit codes that a restart would not change: bad input, or a stop on request."""
    return EXIT_INPUT_ERROR in exit_codes or (bool(exit_codes) and exit_codes <= STOP_EXIT_CODES)


class TrainerAgent(LocalElasticAgent):
    """torchrun's agent, except for how a failed worker group ends."""

    def _monitor_workers(self, worker_group: WorkerGroup) -> RunResult:
        """Bad input or a stop on request uses up the restarts: the job ends."""
        result = super()._monitor_workers(worker_group)
        if ends_job({failure.exitcode for failure in result.failures.values()}):
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
    """SIGTERM/SIGINT handler of the launcher: forward, then give the workers `grace_s` s."""

    def __init__(self, grace_s: int) -> None:
        self.grace_s = grace_s
        self.expired = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if stop_request.stop_requested_here():
            return  # already stopping
        stop_request.request_stop(signum)
        os.environ[STOP_ENV] = str(signum)  # workers (re)started from now on stop at once
        workers = process_children().get(os.getpid(), [])
        print(
            f"launch: {signal.Signals(signum).name}: asking {len(workers)} workers to "
            f"checkpoint and stop (grace period {self.grace_s} s)",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        for pid in workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        signal.signal(signal.SIGALRM, self.on_grace_expired)
        signal.alarm(self.grace_s)

    def on_grace_expired(self, signum: int, frame: FrameType | None) -> None:
        self.expired = True
        # Raised inside torchrun's agent loop: it kills the workers and ends the run.
        raise SignalException("grace period expired", sigval=signal.SIGKILL)


def job_exit_code(failures: dict) -> int:
    """The job's exit code from its failed workers' (tml.core.errors), with a line saying why."""
    codes = {failure.exitcode for failure in failures.values()}
    if EXIT_INPUT_ERROR in codes:
        return EXIT_INPUT_ERROR  # the worker printed the `error:` line; no restart was made
    if ends_job(codes):
        code = min(codes)
        print(f"launch: the workers checkpointed and stopped on request (exit {code})",
              file=sys.stderr, flush=True)  # fmt: skip
        return code
    print(
        f"error: the workers failed (exit codes {sorted(codes)}) and the restarts are used up "
        "(--max_restarts); see their output above",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    try:
        stop = GracefulStop(grace_period_s())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    args = parse_args(argv)
    # SIGTERM and SIGINT are handled here: torchrun's handler would kill the workers at once.
    handled = [
        name.strip()
        for name in args.signals_to_handle.split(",")
        if name.strip() not in {sig.name for sig in STOP_SIGNALS}
    ]
    args.signals_to_handle = ",".join(handled)
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.on_signal)
    if stop_request.stop_requested_here():  # the signal came while the launcher was starting
        print("launch: stopped before any worker started", file=sys.stderr, flush=True)
        return stop_exit_code(stop_request.stop_signal())
    launcher_api.LocalElasticAgent = TrainerAgent  # the class torchrun's launcher instantiates
    try:
        run(args)
    except ChildFailedError as exc:
        return job_exit_code(exc.failures)
    except SignalException:
        if not stop.expired:
            raise
        print(
            f"error: the workers did not stop within {stop.grace_s} s of the stop signal and "
            f"were killed; raise {GRACE_ENV} (and the scheduler's grace period with it)",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return EXIT_FAILURE
    finally:
        signal.alarm(0)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
