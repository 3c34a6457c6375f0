"""Metric records for people and machines: one log line and one JSON line per event (rank 0)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tml")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class MetricsWriter:
    """Appends JSON records to `<save_dir>/metrics.jsonl` and logs them readably; rank 0 only."""

    def __init__(self, path: str | Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info(_describe(record))


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
