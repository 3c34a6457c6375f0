"""Assemble a TwHIN training run from its config and run it: data -> model -> loop -> export.

Order matters for users: everything that can be checked without the other ranks (config, save
dir, data files and schemas) is checked in `prepare` before the process group starts, so a bad
input fails in a second with one clear line instead of hanging a job.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tml.core import stop_request
from tml.core.checkpoint import CheckpointManager, step_directories
from tml.core.config import ConfigError
from tml.core.distributed import DistributedContext
from tml.core.errors import InputError
from tml.core.metrics import MetricsWriter, format_duration
from tml.core.optimizers import fused_table_optimizer
from tml.core.preemption import StopAgreement
from tml.core.prefetch import Prefetcher
from tml.core.profiling import StepProfiler
from tml.core.train_loop import LoopSchedule, train_loop
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.edges import EdgeBatch
from tml.projects.twhin.data.factory import make_dataset
from tml.projects.twhin.data.reader import EdgeDataset
from tml.projects.twhin.export import CONFIG_COPY, export
from tml.projects.twhin.models.sharding import ShardedTwhin, check_compute_kernels, shard_model
from tml.projects.twhin.resume import restore
from tml.projects.twhin.table_norms import table_norm_stats
from tml.projects.twhin.validation import Validator

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4
"""Batches built ahead of the trainer by a background thread (tml/core/prefetch.py)."""


class SaveDirError(InputError):
    """The save dir cannot hold this run's outputs."""


@dataclass
class PreparedRun:
    """Everything checked and planned before the process group exists."""

    config: TwhinConfig
    save_dir: Path
    train_data: EdgeDataset
    validation_data: EdgeDataset | None


def check_save_dir(save_dir: Path, config: TwhinConfig) -> None:
    """The save dir must be a writable directory whose earlier run (if any) has the same tables."""
    if save_dir.exists() and not save_dir.is_dir():
        raise SaveDirError(f"save_dir {save_dir} exists and is not a directory")
    probe = save_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SaveDirError(f"save_dir {save_dir} is not writable (checked {probe})")
    previous = save_dir / CONFIG_COPY
    if previous.is_file():
        old = yaml.safe_load(previous.read_text()) or {}
        old_tables = {
            t["name"]: (t["num_embeddings"], t["embedding_dim"])
            for t in old.get("model", {}).get("embeddings", {}).get("tables", [])
        }
        for index, table in enumerate(config.model.embeddings.tables):
            shape = old_tables.get(table.name)
            if shape and shape != (table.num_embeddings, table.embedding_dim):
                raise SaveDirError(
                    f"model.embeddings.tables[{index}]: table {table.name!r} is "
                    f"{table.num_embeddings}x{table.embedding_dim} but the run in {save_dir} "
                    f"trained it as {shape[0]}x{shape[1]}; use a new --save_dir"
                )


def check_initial_checkpoint(save_dir: Path, config: TwhinConfig) -> None:
    """A warm start (used only when the save dir has no checkpoint yet) must name a checkpoint."""
    initial = config.training.initial_checkpoint_dir
    if initial and not step_directories(save_dir / "checkpoints"):
        if not (Path(initial) / ".metadata").is_file():
            raise ConfigError(
                f"training.initial_checkpoint_dir {initial}: no checkpoint there (no .metadata); "
                "give another run's <save_dir>/checkpoints/step_N"
            )


def prepare(config: TwhinConfig, rank: int, world_size: int) -> PreparedRun:
    """Check the save dir and plan the data (parquet metadata only); no collectives."""
    save_dir = Path(config.training.save_dir)
    check_save_dir(save_dir, config)
    check_initial_checkpoint(save_dir, config)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    for index, table in enumerate(config.model.embeddings.tables):  # e.g. adam on CPU
        fused_table_optimizer(
            table.optimizer, device_type, f"model.embeddings.tables[{index}].optimizer"
        )
    check_compute_kernels(config.model, device_type)
    train_data = make_dataset(
        config, config.train_data, "train_data", rank=rank, world_size=world_size, shuffle=True
    )
    validation_data = None
    if config.validation_data is not None and config.training.num_eval_steps != 0:
        validation_data = make_dataset(
            config, config.validation_data, "validation_data",
            rank=rank, world_size=world_size, shuffle=False,
        )  # fmt: skip
    return PreparedRun(config, save_dir, train_data, validation_data)


def batch_stream(
    dataset: EdgeDataset, epoch: int, step_in_epoch: int, count: int
) -> Iterator[EdgeBatch]:
    """`count` consecutive batches starting at (epoch, step_in_epoch), crossing epochs."""
    produced = 0
    while produced < count:
        for batch in dataset.batches(epoch, step_in_epoch):
            yield batch
            produced += 1
            if produced == count:
                return
        epoch, step_in_epoch = epoch + 1, 0


class TwhinTrainer:
    """One training run on this rank: restore, loop, checkpoint, evaluate, export."""

    def __init__(self, run: PreparedRun, ctx: DistributedContext) -> None:
        self.run = run
        self.ctx = ctx
        self.config = run.config
        training = self.config.training
        self.sharded: ShardedTwhin = shard_model(
            self.config.model, ctx.device, training.seed, ctx.world_size, ctx.local_world_size
        )
        self.checkpoints = CheckpointManager(
            run.save_dir / "checkpoints", training.checkpoint_max_to_keep, ctx.rank
        )
        self.metrics = MetricsWriter(run.save_dir / "metrics.jsonl", ctx.is_chief)
        self.steps_per_epoch = run.train_data.steps_per_epoch
        self.position_offset = 0  # data position minus step; not 0 after a world size change
        self._config_copied = False  # the config beside the checkpoints (export reads it)
        self.total_steps = min(training.num_train_steps, training.num_epochs * self.steps_per_epoch)

    def _state(self) -> dict:
        return {
            "model": self.sharded.model.state_dict(),
            "optim": self.sharded.optimizer.state_dict(),
        }

    def save(self, step: int) -> None:
        epoch, in_epoch = divmod(step + self.position_offset, self.steps_per_epoch)
        path = self.checkpoints.save(
            step,
            self._state(),
            {
                "step": step,
                "epoch": epoch,
                "step_in_epoch": in_epoch,
                "world_size": self.ctx.world_size,
                "per_replica_batch_size": self.run.train_data.config.per_replica_batch_size,
                "steps_per_epoch": self.steps_per_epoch,
                "seed": self.config.training.seed,
            },
        )
        if self.ctx.is_chief and not self._config_copied:
            # Only now: a run that fails before its first checkpoint leaves the save dir as it was.
            config_copy = self.config.model_dump(mode="json", exclude_none=True)
            (self.run.save_dir / CONFIG_COPY).write_text(
                yaml.safe_dump(config_copy, sort_keys=False)
            )
            self._config_copied = True
        log.info("checkpoint written: %s", path)

    def _describe(self, start_step: int) -> None:
        """Say at start what this run will do: world, plan, data, steps, cadences, outputs."""
        data = self.run.train_data
        training = self.config.training
        log.info(
            "world size %d on %s; train edges %s in %d files; %d steps/epoch of %d edges/rank "
            "(%s edges per global batch)",
            self.ctx.world_size, self.ctx.device, f"{data.num_edges:,}", len(data.files),
            self.steps_per_epoch, data.config.per_replica_batch_size,
            f"{data.config.per_replica_batch_size * self.ctx.world_size:,}",
        )  # fmt: skip
        for table in self.config.model.embeddings.tables:
            size = (
                table.num_embeddings * table.embedding_dim * (2 if table.data_type == "fp16" else 4)
            )
            log.info(
                "table %s: %s x %d %s (%.1f MiB), %s",
                table.name, f"{table.num_embeddings:,}", table.embedding_dim,
                table.data_type.value, size / 2**20, self.sharded.plan[table.name],
            )  # fmt: skip
        log.info(
            "training steps %d -> %d (num_train_steps=%d, num_epochs=%d); checkpoint every %d "
            "steps into %s",
            start_step, self.total_steps, training.num_train_steps, training.num_epochs,
            training.checkpoint_every_n, self.checkpoints.directory,
        )  # fmt: skip
        validation = self.run.validation_data
        if validation is not None and training.eval_log_every_n:
            log.info(
                "validation every %d steps on %s edges (num_eval_steps=%d)",
                training.eval_log_every_n, f"{validation.num_edges:,}", training.num_eval_steps,
            )  # fmt: skip
        else:
            log.info("no validation during training")
        save_dir = self.run.save_dir
        log.info(
            "log every %d steps to %s and TensorBoard %s; embedding norms at each checkpoint",
            training.train_log_every_n, save_dir / "metrics.jsonl", save_dir / "tensorboard",
        )  # fmt: skip

    def train(self) -> bool:
        """Train to the end (True) or until every rank agreed to stop early (False)."""
        training = self.config.training
        start = restore(
            self.sharded, self._state(), self.checkpoints, self.config, self.run.train_data,
            self.ctx.world_size,
        )  # fmt: skip
        start_step, epoch, in_epoch = start.step, start.epoch, start.step_in_epoch
        # Steps count on from the checkpoint; num_epochs counts the data from its position.
        position = epoch * self.steps_per_epoch + in_epoch
        self.position_offset = position - start_step
        remaining = training.num_epochs * self.steps_per_epoch - position
        self.total_steps = min(training.num_train_steps, start_step + remaining)
        self._describe(start_step)
        if start_step >= self.total_steps:
            log.info("nothing to do: the newest checkpoint is already at step %d", start_step)
            return True
        pipeline = TrainPipelineSparseDist(
            self.sharded.model, self.sharded.optimizer, self.ctx.device, execute_all_batches=True
        )
        validator = None
        if self.run.validation_data is not None:
            validator = Validator(self.config, self.run.validation_data, self.sharded, self.ctx)

        def evaluate(step: int) -> None:
            self.metrics.write({"step": step, "split": "validation", **validator(pipeline)})

        def checkpoint(step: int) -> None:
            self.save(step)
            norms = table_norm_stats(
                self.sharded.model, self.config.model, self.ctx.device, self.ctx.rank
            )
            self.metrics.write({"step": step, "split": "embeddings", **norms})

        batches = Prefetcher(
            batch_stream(self.run.train_data, epoch, in_epoch, self.total_steps - start_step),
            depth=PREFETCH_BATCHES,
        )
        try:
            done = train_loop(
                pipeline=pipeline,
                batches=batches,
                schedule=LoopSchedule(
                    start_step=start_step,
                    total_steps=self.total_steps,
                    steps_per_epoch=self.steps_per_epoch,
                    log_every=training.train_log_every_n,
                    checkpoint_every=training.checkpoint_every_n,
                    eval_every=training.eval_log_every_n,
                ),
                set_learning_rates=self.sharded.set_learning_rates,
                save_checkpoint=checkpoint,
                evaluate=evaluate if validator is not None else None,
                metrics=self.metrics,
                device=self.ctx.device,
                profiler=self._profiler(start_step),
                should_stop=StopAgreement(),
            )
        finally:
            batches.close()
        if done < self.total_steps:
            log.info(
                "stopped at step %d of %d on request (%s), checkpoint in %s; run the same "
                "command again to resume", done, self.total_steps,
                signal.Signals(stop_request.stop_signal()).name, self.checkpoints.directory,
            )  # fmt: skip
            return False
        return True

    def _profiler(self, start_step: int) -> StepProfiler | None:
        steps = self.config.runtime.profile_steps
        if not steps:
            return None
        return StepProfiler(self.run.save_dir / "profile", self.ctx.rank, start_step, steps)


def run_training(run: PreparedRun, ctx: DistributedContext) -> bool:
    """Train, then (rank 0) export the final embeddings and say where everything is.

    Returns False when the ranks stopped early on request (after a checkpoint)."""
    started = time.perf_counter()
    trainer = TwhinTrainer(run, ctx)
    if ctx.is_chief:
        run.save_dir.mkdir(parents=True, exist_ok=True)
    try:
        finished = trainer.train()
    finally:
        trainer.metrics.close()  # flushes and closes the TensorBoard event file
    del trainer  # frees DMP before teardown (shared/stack.md §4)
    if ctx.is_chief and finished:
        files = export(run.save_dir)
        log.info("done in %s", format_duration(time.perf_counter() - started))
        log.info("checkpoints: %s", run.save_dir / "checkpoints")
        log.info("metrics:     %s", run.save_dir / "metrics.jsonl")
        log.info("embeddings:  %s", ", ".join(str(f) for f in files))
    return finished
