"""How a job ends: the exit codes schedulers act on, and the one error class that means exit 2.

    0            finished (or nothing was left to do)
    1            failed while training: worth a restart (torchrun's --max_restarts retries it)
    2            bad input (config, data, save dir, checkpoint): permanent, never retried
    128 + signal stopped on request after writing a checkpoint (143 SIGTERM, 130 SIGINT): run
                 the same command again to resume

Only the project's own `InputError`s mean exit 2. A `ValueError` raised inside torch or TorchRec
while training is a failure like any other (exit 1), since a restart may well get past it.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT_ERROR = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class InputError(ValueError):
    """Something the user gave cannot be used; the message names the field, file or path.

    Subclasses say which kind (config, data, save dir, checkpoint). A ValueError only so that
    pydantic validators may raise it like any other validation failure.
    """


def stop_exit_code(signum: int) -> int:
    """The exit code of a job that stopped on `signum` after writing a checkpoint."""
    return 128 + int(signum)


STOP_EXIT_CODES = frozenset(stop_exit_code(sig) for sig in STOP_SIGNALS)
