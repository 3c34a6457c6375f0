"""A progress bar for people watching a run on a terminal, and nothing anywhere else.

When rank 0's stderr is an interactive terminal, a tqdm bar shows steps done, the ETA, and the
loss and edges/s of the latest log record; log lines are printed above it instead of through it.
In CI, containers and redirected logs (stderr not a TTY) it stays silent: the periodic metric
lines already carry step, loss, edges/s and ETA, and a bar would only fill files with redraws.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from tqdm import tqdm


class _AboveTheBar(logging.Handler):
    """Passes records to another handler (its filters and format apply) with the bar cleared."""

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> bool:
        with tqdm.external_write_mode():
            return bool(self.inner.handle(record))


class ProgressBar:
    """Steps [start_step, total_steps) on a terminal; a no-op when disabled or not a TTY."""

    def __init__(
        self, start_step: int, total_steps: int, enabled: bool, stream: TextIO | None = None
    ) -> None:
        stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._handlers: list[logging.Handler] = []
        if not (enabled and stream.isatty()):
            return
        self._bar = tqdm(
            total=total_steps, initial=start_step, unit="step", desc="train", file=stream,
            dynamic_ncols=True, smoothing=0.05,
        )  # fmt: skip
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        root.handlers[:] = [_AboveTheBar(handler) for handler in self._handlers]

    def update(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def show(self, record: dict[str, Any]) -> None:
        """Put the latest train record's loss and edges/s beside the bar."""
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{record['loss']:.4g}", edges_per_s=f"{record['edges_per_s']:,.0f}"
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            logging.getLogger().handlers[:] = self._handlers
