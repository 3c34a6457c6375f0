"""A torchrun worker does not outlive its agent.

torchrun starts each worker in a session of its own, so when the agent is killed (an OOM kill, a
`kill -9`) nothing reaches the workers: they would train on as orphans and keep writing into the
save dir. Two guards end them instead, the second in case the first is missed:

* the kernel's parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`) sends SIGTERM, a stop
  request: the ranks checkpoint at the next step boundary and exit (tml.core.stop_request);
* a watchdog thread notices the new parent, requests the stop too, and ends the process with
  exit 1 if it is still running GRACE_PERIOD_S seconds later (blocked in a collective with a rank
  that is gone, say).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from tml.core.errors import EXIT_FAILURE
from tml.core.stop_request import GRACE_ENV, request_stop

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.5

_watched: dict[str, int] = {}  # "parent": the agent's pid, once watch_parent ran
_said_gone = threading.Lock()  # taken by whoever says first that the agent is gone


def under_torchrun() -> bool:
    """Started by a torchrun agent (which sets TORCHELASTIC_RUN_ID for its workers)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def watch_parent(grace_s: int) -> None:
    """Stop this process when its parent (the torchrun agent) dies; kill it `grace_s` later."""
    parent = os.getppid()
    _watched["parent"] = parent
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    watchdog = threading.Thread(
        target=_watch, args=(parent, grace_s), name="parent-watch", daemon=True
    )
    watchdog.start()


def _watch(parent: int, grace_s: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    request_stop(signal.SIGTERM)
    if _said_gone.acquire(blocking=False):
        _say(
            f"the torchrun agent (pid {parent}) is gone: stopping at the next step with a "
            f"checkpoint, or in {grace_s} s at the latest ({GRACE_ENV})"
        )
    time.sleep(grace_s)
    _say(f"still running {grace_s} s after the torchrun agent (pid {parent}) died: exiting")
    os._exit(EXIT_FAILURE)


def say_if_orphaned() -> None:
    """Before a worker exits: if its agent died and the watchdog has not said so yet, say it now
    (the parent-death signal's stop can end the process within the watchdog's poll interval)."""
    parent = _watched.get("parent")
    if parent is not None and os.getppid() != parent and _said_gone.acquire(blocking=False):
        _say(f"the torchrun agent (pid {parent}) is gone: stopped with a checkpoint")


def _say(message: str) -> None:
    """One line on stderr, written directly: the main thread may hold the logging locks."""
    os.write(2, f"error: rank {os.environ.get('RANK', '?')}: {message}\n".encode())
