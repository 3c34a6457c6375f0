"""torchrun worker: many checkpoint round trips of the resume matrix in one process group.

Reads a job file of tasks (tests/distributed/test_resume_matrix.py writes it) and runs them in order with the
trainer's own classes, so each round trip costs seconds rather than a job start:

* reference: train a config for STEPS_BEFORE + STEPS_AFTER steps, checkpointing at STEPS_BEFORE;
* resume: copy a reference's first checkpoint into a new save dir, restore it under this task's
  config and world size (a refusal is recorded, and the weights are then restored alone, as
  `training.resume_optimizer: false` does), save the restored state again into `reloaded/` (the
  test compares it with the checkpoint, tensor by tensor), then train to the end.

Rank 0 writes {task id: {"plan": ..., "refused": message or None}} to the job's results file.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch.distributed as dist  # noqa: E402

from tml.core.checkpoint import CheckpointManager  # noqa: E402
from tml.core.distributed import DistributedContext, init_distributed, shutdown  # noqa: E402
from tml.projects.twhin.artifacts.run_dir import RunDir  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.training.preflight import prepare  # noqa: E402
from tml.projects.twhin.training.resume import ResumeError, restore  # noqa: E402
from tml.projects.twhin.training.trainer import TwhinTrainer  # noqa: E402


def place_checkpoint(source: Path, save_dir: Path, step: int) -> None:
    """The reference run's checkpoint at `step` as the only one of a new save dir (rank 0)."""
    source_dir, target_dir = RunDir.at(source), RunDir.at(save_dir)
    target_dir.checkpoints.mkdir()
    shutil.copytree(source_dir.checkpoint(f"step_{step}"), target_dir.checkpoint(f"step_{step}"))
    shutil.copy(source_dir.config, target_dir.config)


def restore_into(trainer: TwhinTrainer, config: TwhinConfig, ctx: DistributedContext) -> None:
    """What the trainer does first in train(): restore its own state (`_state()`, the dict it
    saves and restores) from the newest checkpoint."""
    restore(trainer.sharded, trainer._state(), trainer.checkpoints, config,
            trainer.run.train_data, ctx.world_size)  # fmt: skip


def run_task(task: dict[str, Any], ctx: DistributedContext, step: int) -> dict[str, Any]:
    config = TwhinConfig.model_validate(task["config"])
    save_dir = Path(config.training.save_dir)
    if ctx.rank == 0:
        save_dir.mkdir(parents=True)
        if task["kind"] == "resume":
            place_checkpoint(Path(task["from"]), save_dir, step)
    dist.barrier()
    trainer = TwhinTrainer(prepare(config, ctx.rank, ctx.world_size), ctx)
    outcome: dict[str, Any] = {"plan": trainer.sharded.plan, "refused": None}
    try:
        if task["kind"] == "resume":
            try:
                restore_into(trainer, config, ctx)
            except ResumeError as exc:  # then the way out the message names: weights only
                outcome["refused"] = str(exc)
                config.training.resume_optimizer = False
                restore_into(trainer, config, ctx)
            reloaded = CheckpointManager(save_dir / "reloaded", keep=None, rank=ctx.rank)
            reloaded.save(step, trainer._state(), {"step": step})
        trainer.train()  # restores the newest checkpoint (again) and trains to the end
    finally:
        trainer.metrics.close()
        del trainer
        gc.collect()
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    args = parser.parse_args()
    job = json.loads(Path(args.job).read_text())
    logging.basicConfig(level=logging.WARNING)
    ctx = init_distributed()
    results = {task["id"]: run_task(task, ctx, job["step"]) for task in job["tasks"]}
    if ctx.rank == 0:
        Path(job["results"]).write_text(json.dumps(results, indent=1))
    shutdown()


if __name__ == "__main__":
    main()
