"""The training loop: one readable pass from the first step to the last.

Model-specific work is passed in as callables, so the loop itself only orders the steps:
set learning rates -> pipeline step (lookup, score, backward, fused update) -> log -> evaluate ->
checkpoint -> stop early if asked (preemption) or if the evaluation says so (early stopping).
Every rank runs the same steps and calls the same collectives in the same order.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tml.core import timeline
from tml.core.metrics import MetricsWriter
from tml.core.profiling import StepProfiler
from tml.core.progress import ProgressBar


@dataclass
class LoopSchedule:
    """When things happen, in steps (all counted from step 0 of the run, not of the resume)."""

    start_step: int
    total_steps: int
    steps_per_epoch: int
    log_every: int
    checkpoint_every: int
    eval_every: int | None


@dataclass(frozen=True)
class AfterEvaluation:
    """What an evaluation asks of the loop; every rank must return the same."""

    checkpoint: bool = False  # checkpoint this step, whatever the cadence (a new best model)
    finish: bool = False  # the run is done at this step (early stopping): checkpoint and return


def train_loop(
    *,
    pipeline: Any,
    batches: Iterator[Any],
    schedule: LoopSchedule,
    set_learning_rates: Callable[[int], dict[str, float]],
    save_checkpoint: Callable[[int], None],
    evaluate: Callable[[int], AfterEvaluation | None] | None,
    metrics: MetricsWriter,
    device: torch.device,
    profiler: StepProfiler | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run steps [start_step, total_steps) of `pipeline` over `batches`; returns the steps done.

    `should_stop` is asked after every step (all ranks at once); when it says yes, the loop
    checkpoints that step and returns early; so it does when `evaluate` asks to finish.
    `profiler` times a window of steps by stage.
    """
    window_loss = torch.zeros((), dtype=torch.float64, device=device)
    window_edges = torch.zeros((), dtype=torch.float64, device=device)
    window_start, run_start = time.perf_counter(), time.perf_counter()
    steps_done_in_window = 0
    progress = ProgressBar(schedule.start_step, schedule.total_steps, enabled=metrics.enabled)
    for step in range(schedule.start_step, schedule.total_steps):
        rates = set_learning_rates(step)
        with profiler.around(step) if profiler else nullcontext():
            output = pipeline.progress(batches)
        progress.update()
        if step == schedule.start_step:
            timeline.mark("first_step")
        edges = output["weight"].sum()
        window_loss += output["loss"].double() * edges
        window_edges += edges
        steps_done_in_window += 1
        done = step + 1
        last = done == schedule.total_steps
        if last:
            timeline.mark("steps")
        if done % schedule.log_every == 0 or last:
            totals = torch.stack([window_loss, window_edges])
            dist.all_reduce(totals)  # every rank's edges: the job's loss and throughput
            elapsed = time.perf_counter() - window_start
            seconds_per_step = (time.perf_counter() - run_start) / (done - schedule.start_step)
            record = {
                "step": done,
                "epoch": step // schedule.steps_per_epoch,
                "loss": float(totals[0] / totals[1].clamp(min=1)),
                "lr": rates,
                "edges_per_s": float(totals[1]) / max(elapsed, 1e-9),
                "step_ms": 1000 * elapsed / steps_done_in_window,
                "eta_s": seconds_per_step * (schedule.total_steps - done),
                "loop_s": time.perf_counter() - run_start,
            }
            if last:
                record["peak_rss_mb"] = peak_rss_mb_per_rank(device)
            metrics.write(record)
            progress.show(record)
            window_loss.zero_()
            window_edges.zero_()
            window_start, steps_done_in_window = time.perf_counter(), 0
        verdict = AfterEvaluation()
        if (
            evaluate is not None
            and schedule.eval_every
            and (done % schedule.eval_every == 0 or last)
        ):
            verdict = evaluate(done) or verdict
        stop = not last and (verdict.finish or (should_stop is not None and should_stop()))
        if done % schedule.checkpoint_every == 0 or last or stop or verdict.checkpoint:
            save_checkpoint(done)
        if stop:
            progress.close()
            return done
    progress.close()
    return schedule.total_steps


def peak_rss_mb_per_rank(device: torch.device) -> dict[str, float]:
    """Every rank's peak resident memory so far, in MiB (a collective)."""
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    gathered = torch.zeros(dist.get_world_size(), dtype=torch.float64, device=device)
    gathered[dist.get_rank()] = mine
    dist.all_reduce(gathered)
    return {f"rank{rank}": round(value, 1) for rank, value in enumerate(gathered.tolist())}
