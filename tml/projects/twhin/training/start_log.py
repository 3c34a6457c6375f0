"""What a run says at its start (rank 0): world, data, tables and their plan, steps, cadences and
where its outputs go, so a person watching knows what will happen before it happens."""

from __future__ import annotations

import logging

from tml.core.distributed import DistributedContext
from tml.projects.twhin.training.preflight import PreparedRun

log = logging.getLogger(__name__)


def log_start(
    run: PreparedRun, ctx: DistributedContext, plan: dict[str, str], start_step: int,
    total_steps: int,
) -> None:  # fmt: skip
    """Say at start what this run will do: world, plan, data, steps, cadences, outputs."""
    config, data, paths = run.config, run.train_data, run.run_dir
    training = config.training
    log.info(
        "world size %d on %s; train edges %s in %d files; %d steps/epoch of %d edges/rank "
        "(%s edges per global batch)",
        ctx.world_size, ctx.device, f"{data.num_edges:,}", len(data.files),
        data.steps_per_epoch, data.config.per_replica_batch_size,
        f"{data.config.per_replica_batch_size * ctx.world_size:,}",
    )  # fmt: skip
    for table in config.model.embeddings.tables:
        size = table.num_embeddings * table.embedding_dim * (2 if table.data_type == "fp16" else 4)
        log.info(
            "table %s: %s x %d %s (%.1f MiB), %s",
            table.name, f"{table.num_embeddings:,}", table.embedding_dim,
            table.data_type.value, size / 2**20, plan[table.name],
        )  # fmt: skip
    log.info(
        "training steps %d -> %d (num_train_steps=%d, num_epochs=%d); checkpoint every %d "
        "steps into %s",
        start_step, total_steps, training.num_train_steps, training.num_epochs,
        training.checkpoint_every_n, paths.checkpoints,
    )  # fmt: skip
    validation = run.validation_data
    if validation is not None and training.eval_log_every_n:
        log.info(
            "validation every %d steps on %s edges (num_eval_steps=%d)",
            training.eval_log_every_n, f"{validation.num_edges:,}", training.num_eval_steps,
        )  # fmt: skip
    else:
        log.info("no validation during training")
    log.info(
        "log every %d steps to %s and TensorBoard %s; embedding norms at each checkpoint",
        training.train_log_every_n, paths.metrics, paths.tensorboard,
    )  # fmt: skip
