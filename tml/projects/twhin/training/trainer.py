"""One training run on this rank: restore, the loop, checkpoints, validation, then the export.

`TwhinTrainer.train` reads top to bottom: where to start (resume.py), what to say (start_log.py),
the pipeline and the loop (tml/core/train_loop.py) with its checkpoint and evaluation callbacks.
`run_training` adds the export and the closing lines that say where everything is.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tml.core import stop_request, timeline
from tml.core.checkpoint import CheckpointManager
from tml.core.distributed import DistributedContext
from tml.core.metrics import MetricsWriter, format_duration
from tml.core.preemption import StopAgreement
from tml.core.prefetch import Prefetcher
from tml.core.profiling import StepProfiler
from tml.core.train_loop import AfterEvaluation, LoopSchedule, train_loop
from tml.projects.twhin.artifacts.checkpoints import MODEL_STATE, OPTIMIZER_STATE, ROWS_PER_READ
from tml.projects.twhin.artifacts.export import export
from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.data.dataset import EdgeDataset
from tml.projects.twhin.parallel.norms import table_norm_stats
from tml.projects.twhin.parallel.sharded_model import ShardedTwhin, shard_model
from tml.projects.twhin.parallel.tables import table_weights, whole_table_rows
from tml.projects.twhin.training.early_stopping import STATE_KEY, EarlyStopper
from tml.projects.twhin.training.preflight import PreparedRun
from tml.projects.twhin.training.resume import restore
from tml.projects.twhin.training.start_log import log_start
from tml.projects.twhin.training.state import StartPoint, TrainerState
from tml.projects.twhin.training.validation import Validator

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4
"""Batches built ahead of the trainer by a background thread (tml/core/prefetch.py)."""


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
            self.config.model, ctx.device, training.seed, ctx.world_size, ctx.local_world_size,
            lookups_per_step=run.train_data.builder.layout.num_slots,
            anchor=self.config.warm_start.anchor,
        )  # fmt: skip
        timeline.mark("model")
        paths = run.run_dir
        self.checkpoints = CheckpointManager(
            paths.checkpoints, training.checkpoint_max_to_keep, ctx.rank
        )
        self.metrics = MetricsWriter(paths.metrics, paths.tensorboard, ctx.is_chief)
        self.early_stopping = None
        if training.early_stopping is not None:
            self.early_stopping = EarlyStopper(training.early_stopping, self.checkpoints)
        self.steps_per_epoch = run.train_data.steps_per_epoch
        self.position_offset = 0  # data position minus step; not 0 after a world size change
        self._config_copied = False  # the config beside the checkpoints (export reads it)
        self.last_saved: Path | None = None  # the checkpoint this process wrote last
        self.total_steps = min(training.num_train_steps, training.num_epochs * self.steps_per_epoch)

    def _state(self) -> dict[str, Any]:
        """What a checkpoint holds (the layout artifacts/checkpoints.py reads back)."""
        return {
            MODEL_STATE: self.sharded.model.state_dict(),
            OPTIMIZER_STATE: self.sharded.optimizer.state_dict(),
        }

    def trainer_state(self, step: int) -> TrainerState:
        """The position saved with the checkpoint of `step`."""
        epoch, in_epoch = divmod(step + self.position_offset, self.steps_per_epoch)
        return TrainerState(
            step=step,
            epoch=epoch,
            step_in_epoch=in_epoch,
            world_size=self.ctx.world_size,
            per_replica_batch_size=self.run.train_data.config.per_replica_batch_size,
            steps_per_epoch=self.steps_per_epoch,
            seed=self.config.training.seed,
        )

    def save(self, step: int) -> None:
        trainer_state: dict[str, Any] = {**self.trainer_state(step).to_dict()}
        if self.early_stopping is not None:
            trainer_state[STATE_KEY] = self.early_stopping.state_dict()
        path = self.checkpoints.save(step, self._state(), trainer_state)
        if self.ctx.is_chief and not self._config_copied:
            # Only now: a run that fails before its first checkpoint leaves the save dir as it was.
            config_copy = self.config.model_dump(mode="json", exclude_none=True)
            self.run.run_dir.config.write_text(yaml.safe_dump(config_copy, sort_keys=False))
            self._config_copied = True
        self.last_saved = path
        log.info("checkpoint written: %s", path)
        if self.early_stopping is not None:
            self.early_stopping.saved(step)  # best.json names only published checkpoints

    def checkpoint(self, step: int) -> None:
        """The loop's checkpoint callback: save, then record the tables' row norms."""
        self.save(step)
        norms = table_norm_stats(
            self.sharded.model, self.config.model, self.ctx.device, self.ctx.rank
        )
        self.metrics.write({"step": step, "split": "embeddings", **norms})

    def start(self) -> StartPoint:
        """Restore (or not), fix the step count and the data position, and say what will happen."""
        training = self.config.training
        start = restore(
            self.sharded, self._state(), self.checkpoints, self.config, self.run.train_data,
            self.ctx.world_size,
        )  # fmt: skip
        # Steps count on from the checkpoint; num_epochs counts the data from its position.
        self.position_offset = start.position_offset(self.steps_per_epoch)
        remaining = training.num_epochs * self.steps_per_epoch - (start.step + self.position_offset)
        self.total_steps = min(training.num_train_steps, start.step + remaining)
        log_start(self.run, self.ctx, self.sharded.plan, start.step, self.total_steps)
        if self.early_stopping is not None:
            self.early_stopping.begin(start, training.eval_log_every_n)
        timeline.mark("restore")
        return start

    def train(self) -> bool:
        """Train to the end (True) or until every rank agreed to stop early (False)."""
        training = self.config.training
        start = self.start()
        start_step, epoch, in_epoch = start.step, start.epoch, start.step_in_epoch
        if start_step >= self.total_steps:
            log.info("nothing to do: the newest checkpoint is already at step %d", start_step)
            return True
        if self.early_stopping is not None and self.early_stopping.exhausted:
            log.info("nothing to do: early stopping ended this run at step %d", start_step)
            return True
        pipeline = TrainPipelineSparseDist(
            self.sharded.model, self.sharded.optimizer, self.ctx.device, execute_all_batches=True
        )
        validator = None
        if self.run.validation_data is not None:
            validator = Validator(self.config, self.run.validation_data, self.sharded, self.ctx)

        def evaluate(step: int) -> AfterEvaluation | None:
            assert validator is not None
            metrics = validator(pipeline)
            self.metrics.write({"step": step, "split": "validation", **metrics})
            if self.early_stopping is None:
                return None
            return self.early_stopping.observe(step, metrics)

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
                save_checkpoint=self.checkpoint,
                evaluate=evaluate if validator is not None else None,
                metrics=self.metrics,
                device=self.ctx.device,
                profiler=self._profiler(start_step),
                should_stop=StopAgreement(),
            )
        finally:
            batches.close()
        timeline.mark("final_checkpoint")
        stopper = self.early_stopping
        if stopper is not None and stopper.exhausted and done < self.total_steps:
            stopper.log_stop(done, self.total_steps)
            return True
        if done < self.total_steps:
            log.info(
                "stopped at step %d of %d on request (%s), checkpoint in %s; run the same "
                "command again to resume", done, self.total_steps,
                signal.Signals(stop_request.stop_signal()).name, self.checkpoints.directory,
            )  # fmt: skip
            return False
        return True

    def tables_in_memory(self) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """Row blocks of the tables this rank holds whole (parallel/tables.py), for the export:
        they are the last checkpoint's rows when nothing trained after it."""
        weights = table_weights(self.sharded.model)
        held = {}
        for table in self.config.model.embeddings.tables:
            rows = whole_table_rows(
                weights[table.name], table.num_embeddings, table.embedding_dim, ROWS_PER_READ
            )
            if rows is not None:
                held[table.name] = rows
        return held

    def _profiler(self, start_step: int) -> StepProfiler | None:
        steps = self.config.runtime.profile_steps
        if not steps:
            return None
        return StepProfiler(self.run.run_dir.profile, self.ctx.rank, start_step, steps)


def run_training(run: PreparedRun, ctx: DistributedContext) -> bool:
    """Train, then (rank 0) export the final embeddings (the best checkpoint's with early
    stopping, else the last's) and say where everything is.

    Returns False when the ranks stopped early on request (after a checkpoint)."""
    started = time.perf_counter()
    trainer = TwhinTrainer(run, ctx)
    if ctx.is_chief:
        run.run_dir.root.mkdir(parents=True, exist_ok=True)
    try:
        finished = trainer.train()
    finally:
        trainer.metrics.close()  # flushes and closes the TensorBoard event file
    stopper = trainer.early_stopping
    if ctx.is_chief and finished:
        if stopper is not None and stopper.export_choice() == "best":
            files = export(run.run_dir.root, "best")  # an earlier checkpoint: read from its files
        else:
            # The final checkpoint was written from these tables a moment ago: what this rank
            # holds whole comes from memory (no second pass over the checkpoint), the rest from
            # the files.
            written = trainer.last_saved
            files = export(
                run.run_dir.root,
                str(written) if written else None,
                in_memory=trainer.tables_in_memory() if written else None,
            )
        timeline.mark("export")
        log.info("done in %s", format_duration(time.perf_counter() - started))
        log.info("checkpoints: %s", run.run_dir.checkpoints)
        log.info("metrics:     %s", run.run_dir.metrics)
        log.info("embeddings:  %s", ", ".join(str(f) for f in files))
    return finished
