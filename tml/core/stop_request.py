"""SIGTERM and SIGINT mean "checkpoint and stop": this process only notes which signal came.

Imports nothing heavy on purpose: a worker installs the handler before it imports torch, so a
signal that arrives while it is still importing (a preemption right after a restart) is noted
rather than killing it half-started. The ranks then agree to stop at a step boundary
(tml.core.preemption), write one checkpoint and exit with 128 + the signal (tml.core.errors).

`tml.core.launch` forwards the signal to its workers and puts it in STOP_ENV for workers it starts
afterwards (a restart racing the signal), so they stop at their first step boundary.
A second Ctrl-C interrupts at once, as people expect of a terminal program.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from tml.core.errors import STOP_SIGNALS, InputError

STOP_ENV = "TML_STOP_REQUESTED"  # the signal's number, set by the launcher
GRACE_ENV = "GRACE_PERIOD_S"
DEFAULT_GRACE_PERIOD_S = 30

_requested = threading.Event()
_signal: int = 0  # the first stop signal received (or agreed on by the ranks); 0: none


def install_stop_handler() -> None:
    """Make SIGTERM and SIGINT stop requests for this process (call first thing in a worker)."""
    inherited = os.environ.get(STOP_ENV, "")
    if inherited.isdigit() and int(inherited) in STOP_SIGNALS:
        request_stop(int(inherited))
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT and _requested.is_set():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt  # Ctrl-C twice: do not wait for the step to end
    if signum == signal.SIGINT and os.environ.get("LOCAL_RANK", "0") == "0":
        os.write(2, b"stopping after this step with a checkpoint (Ctrl-C again to abort)\n")
    request_stop(signum)


def request_stop(signum: int) -> None:
    """Note a stop request (the signal handler's job; also the parent watchdog's)."""
    global _signal
    if not _requested.is_set():
        _signal = int(signum)
        _requested.set()


def stop_requested_here() -> bool:
    """Whether this process was asked to stop (no collective)."""
    return _requested.is_set()


def stop_signal() -> int:
    """The signal this process stops for (0 if none): its exit code is 128 + it."""
    return _signal


def agree_on(signum: int) -> None:
    """Adopt the signal every rank agreed to stop for, so all ranks exit with one code."""
    global _signal
    _signal = int(signum)
    _requested.set()


def grace_period_s() -> int:
    """Seconds a stop may take before the process is killed (GRACE_PERIOD_S, default 30)."""
    value = os.environ.get(GRACE_ENV, str(DEFAULT_GRACE_PERIOD_S))
    if not value.isdigit() or int(value) == 0:
        raise InputError(f"{GRACE_ENV}={value} is not a positive number of seconds")
    return int(value)
