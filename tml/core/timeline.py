"""Where a run's time goes outside its steps: named marks from process start to exit.

`mark(name)` closes the phase that ended there; `summary()` is one log line of every phase's
wall and CPU seconds (CPU: this process, every thread), so the fixed costs of a run (imports,
planning, the first step, the final checkpoint, the export, teardown) can be read from its log
and tracked by `benchmarks/throughput.py`. The first phase starts when the process started, not
when this module was imported. Imports nothing slow: run.py marks before torch is loaded.
"""

from __future__ import annotations

import os
import time

_marks: list[tuple[str, float, float]] = []


def process_start_time() -> float:
    """When this process started (epoch seconds), from /proc; now where /proc is unavailable."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


_start = (process_start_time(), 0.0)  # (wall, process CPU) when the process started


def mark(name: str) -> None:
    """The phase `name` ends now (it began at the previous mark, or at process start)."""
    _marks.append((name, time.time(), time.process_time()))


def phases() -> list[tuple[str, float, float]]:
    """(name, wall seconds, CPU seconds) of each phase, in order."""
    result = []
    wall, cpu = _start
    for name, at_wall, at_cpu in _marks:
        result.append((name, at_wall - wall, at_cpu - cpu))
        wall, cpu = at_wall, at_cpu
    return result


def summary() -> str:
    """`name=wall/cpu` seconds of each phase, then the total since process start."""
    parts = [f"{name}={wall:.2f}/{cpu:.2f}" for name, wall, cpu in phases()]
    if _marks:
        parts.append(f"total={_marks[-1][1] - _start[0]:.2f}/{_marks[-1][2]:.2f}")
    return "timeline wall/cpu s: " + " ".join(parts)
