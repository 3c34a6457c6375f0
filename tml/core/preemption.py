"""SIGTERM means "checkpoint and stop", at a step boundary every rank agrees on.

Kubernetes and Slurm send SIGTERM before they kill a job. A rank that gets it only sets a flag;
at each step boundary the ranks all-reduce their flags (MAX), so they all stop after the same
step, write one checkpoint together and exit 0. A later start resumes from that checkpoint.

`tml.core.launch` forwards SIGTERM to its workers, and sets STOP_ENV for workers it starts
afterwards (a restart racing the signal), so they stop at their first step boundary.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import torch
import torch.distributed as dist

STOP_ENV = "TML_STOP_REQUESTED"

_requested = threading.Event()


def install_stop_handler() -> None:
    """Make SIGTERM a stop request for this process (call first thing in a worker)."""
    if os.environ.get(STOP_ENV) == "1":
        _requested.set()
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _requested.set()


def stop_requested_here() -> bool:
    """Whether this process was asked to stop (no collective)."""
    return _requested.is_set()


class StopAgreement:
    """Callable at step boundaries: True on every rank as soon as any rank was asked to stop.

    The flag travels over gloo on the CPU, so GPU runs do not synchronise the stream for it.
    Create it on every rank at the same point (it may create a process group).
    """

    def __init__(self) -> None:
        self._group = None
        if dist.get_backend() != dist.Backend.GLOO:
            self._group = dist.new_group(backend=dist.Backend.GLOO)
        self._flag = torch.zeros(1, dtype=torch.int32)

    def __call__(self) -> bool:
        self._flag.fill_(int(_requested.is_set()))
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(self._flag.item())
