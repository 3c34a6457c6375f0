"""Where a training step's time goes: torch.profiler over a window of steps, grouped by stage.

`runtime.profile_steps: N` profiles steps [start + warm-up, start + warm-up + N) of a run and
writes, per rank, `<save_dir>/profile/rank_<r>.json` with milliseconds per step for each stage
below, and (rank 0) a Chrome trace `trace_rank_0.json` to open in chrome://tracing or Perfetto.

Each profiled operator's own (self) time is charged to the first stage found on the way from
the operator up through its enclosing profiler ranges, so a collective inside the table lookup
counts as communication and an operator run by the autograd engine as backward/update.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.profiler import ProfilerActivity, profile

log = logging.getLogger(__name__)

SCORING_RANGE = "twhin/score"
"""`record_function` label of the scorer's forward."""

# (stage, substrings of an operator or range name), tried in this order on each name.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("communication", ("c10d::", "all2all", "alltoall", "allreduce", "all_reduce", "_dist]",
                       "## wait", "barrier")),
    ("data", ("## next_batch ##", "## copy_batch_to_gpu ##")),
    ("backward_update", ("autograd::engine", "fbgemm::split_embedding_backward", "Optimizer.",
                         "## backward ##", "## optimizer ##")),
    ("lookup", ("[lookup]", "fbgemm::split_embedding_codegen_forward")),
    ("scoring", (SCORING_RANGE,)),
)  # fmt: skip
WARMUP_STEPS = 10


def stage_of(name: str) -> str | None:
    for stage, markers in STAGES:
        if any(marker in name for marker in markers):
            return stage
    return None


def stage_times_ms(events: Any) -> dict[str, float]:
    """Self CPU milliseconds per stage over profiler `events` ("other": no stage matched)."""
    totals: dict[str, float] = {stage: 0.0 for stage, _ in STAGES}
    totals["other"] = 0.0
    for event in events:
        stage, node = None, event
        while node is not None and stage is None:
            stage = stage_of(node.name)
            node = node.cpu_parent
        totals[stage or "other"] += event.self_cpu_time_total / 1000.0
    return totals


class StepProfiler:
    """Profiles a window of steps of the train loop; `around(step)` wraps one step."""

    def __init__(self, directory: Path, rank: int, start_step: int, steps: int) -> None:
        self.directory = directory
        self.rank = rank
        self.first = start_step + WARMUP_STEPS
        self.last = self.first + steps  # exclusive
        self._profile: profile | None = None
        self._started = 0.0

    @contextmanager
    def around(self, step: int) -> Iterator[None]:
        if step == self.first:
            self._profile = profile(activities=[ProfilerActivity.CPU])
            self._profile.__enter__()
            self._started = time.perf_counter()
        yield
        if self._profile is not None and step + 1 == self.last:
            self._finish(step + 1 - self.first)

    def _finish(self, steps: int) -> None:
        wall_ms = 1000 * (time.perf_counter() - self._started)
        prof, self._profile = self._profile, None
        assert prof is not None  # called only while profiling
        prof.__exit__(None, None, None)
        per_step = {k: v / steps for k, v in stage_times_ms(prof.events()).items()}
        summary = {
            "rank": self.rank,
            "steps": steps,
            "wall_ms_per_step": wall_ms / steps,
            "ms_per_step": per_step,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank_{self.rank}.json").write_text(json.dumps(summary, indent=2))
        if self.rank == 0:
            prof.export_chrome_trace(str(self.directory / "trace_rank_0.json"))
        log.info(
            "profiled %d steps: %s ms/step (wall %.1f)",
            steps, ", ".join(f"{k} {v:.1f}" for k, v in per_step.items()), wall_ms / steps,
        )  # fmt: skip
