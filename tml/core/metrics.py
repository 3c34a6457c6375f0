"""Metric records for people and machines: one log line, one JSON line and TensorBoard scalars per
event (rank 0)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("tml")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class MetricsWriter:
    """Appends JSON records to a JSON-lines file, logs them readably and mirrors their numbers
    to TensorBoard event files in `tensorboard_dir`; rank 0 only.

    The SummaryWriter is created on the first write, so ranks that never write (and runs that
    end before logging anything) leave no empty event files behind.
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path, enabled: bool) -> None:
        self.path = Path(path)
        self.tensorboard_dir = Path(tensorboard_dir)
        self.enabled = enabled
        self._tensorboard: SummaryWriter | None = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info(_describe(record))
        self._write_scalars(record)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _write_scalars(self, record: dict[str, Any]) -> None:
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter  # only rank 0 needs it

            self._tensorboard = SummaryWriter(str(self.tensorboard_dir))
        # time and step are TensorBoard's x-axes, not series.
        numbers = {k: v for k, v in record.items() if k not in ("time", "step")}
        for tag, value in _scalars(numbers, record.get("split", "train")):
            self._tensorboard.add_scalar(tag, value, record["step"], walltime=record["time"])
        # Records come every train_log_every_n steps at most: flush so TensorBoard shows them now.
        self._tensorboard.flush()


def _scalars(values: dict[str, Any], prefix: str) -> list[tuple[str, float]]:
    """`prefix/key` for every number in `values`, nested dicts as `prefix/key/name`; strings
    (the split) and bools (flags, not series) are left out."""
    scalars = []
    for key, value in values.items():
        if isinstance(value, dict):
            scalars += _scalars(value, f"{prefix}/{key}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            scalars.append((f"{prefix}/{key}", value))
    return scalars


def _describe(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if key == "time":
            continue
        if key == "eta_s":
            parts.append(f"eta {format_duration(value)}")
        elif isinstance(value, dict):
            inner = " ".join(f"{k}={_number(v)}" for k, v in value.items())
            parts.append(f"{key}[{inner}]")
        else:
            parts.append(f"{key}={_number(value)}")
    return " ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)
