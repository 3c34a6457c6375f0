"""A stop request (tml.core.stop_request) becomes a stop at a step boundary every rank agrees on.

Kubernetes and Slurm send SIGTERM before they kill a job; Ctrl-C sends SIGINT. A rank that gets
one only notes it; at each step boundary the ranks all-reduce the signal numbers (MAX), so they
all stop after the same step, write one checkpoint together and exit with 128 + that signal. A
later start resumes from that checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tml.core import stop_request


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
        self._flag.fill_(stop_request.stop_signal())
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group)
        agreed = int(self._flag.item())
        if agreed:
            stop_request.agree_on(agreed)
        return bool(agreed)
