"""Where a run starts: the newest checkpoint that loads, another run's weights, or step 0.

Resuming reshards: DCP loads a checkpoint written by any number of ranks under any plan. Before
loading, every tensor's shape is checked against this config, so a changed config is a clear
error rather than a fallback to an older checkpoint. A damaged checkpoint (unreadable files) is
skipped with a warning and the one before it is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tml.core.checkpoint import (
    CheckpointError,
    CheckpointManager,
    global_shapes,
    saved_shapes,
    shape_mismatches,
    step_directories,
)
from tml.core.distributed import from_every_rank
from tml.core.errors import InputError
from tml.projects.twhin.artifacts.checkpoints import (
    MODEL_STATE,
    OPTIMIZER_STATE,
    per_relation_view,
)
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset
from tml.projects.twhin.models.model import table_in_key
from tml.projects.twhin.parallel.sharded_model import ShardedTwhin
from tml.projects.twhin.training.state import StartPoint, TrainerState
from tml.projects.twhin.training.warm_start import warm_start

log = logging.getLogger(__name__)


class ResumeError(InputError):
    """The save dir's checkpoints cannot start this run; the message says what to change."""


def restore(
    sharded: ShardedTwhin,
    state: dict[str, Any],
    checkpoints: CheckpointManager,
    config: TwhinConfig,
    data: EdgeDataset,
    world_size: int,
) -> StartPoint:
    """Load the newest checkpoint that loads into `sharded` (its `state` dict), or warm start."""
    candidates = checkpoints.usable()
    if not candidates:
        if step_directories(checkpoints.directory):
            raise ResumeError(
                f"no usable checkpoint in {checkpoints.directory} (see the warnings above); "
                "move the damaged step_* folders away to start from scratch"
            )
        if config.training.initial_checkpoint_dir:
            warm_start(sharded, config, Path(config.training.initial_checkpoint_dir), data)
        return StartPoint(0, 0, 0)
    if not config.training.resume_optimizer:
        del state[OPTIMIZER_STATE]
    reasons = []
    for path in candidates:
        try:  # older checkpoints hold one tensor per relation: load those into the stacks
            request, finish = per_relation_view(config.model, state, saved_shapes(path))
            check_fits(path, request, config)
            saved = checkpoints.load(path, request)
            finish()
        except CheckpointError as exc:
            if checkpoints.rank == 0:
                log.warning("skipping checkpoint %s: %s", path, exc)
            reasons.append(str(exc))
            continue
        sharded.model.load_state_dict(state[MODEL_STATE])
        if OPTIMIZER_STATE in state:
            sharded.optimizer.load_state_dict(state[OPTIMIZER_STATE])
        else:
            log.info("restored the weights only (resume_optimizer: false); optimizer starts fresh")
        return StartPoint.resumed(
            path, TrainerState.from_dict(saved), world_size,
            data.config.per_replica_batch_size, data.steps_per_epoch,
        )  # fmt: skip
    raise ResumeError(
        f"none of the checkpoints in {checkpoints.directory} can be loaded; {'; '.join(reasons)}"
    )


def check_fits(path: Path, state: dict[str, Any], config: TwhinConfig) -> None:
    """Every tensor of `state` is in the checkpoint with the same global shape, or ResumeError."""
    mine = shape_mismatches(saved_shapes(path), global_shapes(state))
    # A rank sees only the optimizer state of its own tables: decide on what all ranks found.
    problems = sorted({problem for found in from_every_rank(mine) for problem in found})
    model_problems = [p for p in problems if p.startswith(f"{MODEL_STATE}.")]
    if model_problems:
        raise ResumeError(
            f"cannot resume from {path}: it does not fit this config's model "
            f"({model_problems[0]}); use a new --save_dir or the config that wrote it"
        )
    if problems:
        raise ResumeError(optimizer_problem(path, problems, config))


def optimizer_problem(path: Path, problems: list[str], config: TwhinConfig) -> str:
    """Which tables' optimizer state cannot move to this run, why, and what to set instead."""
    optimizers = {t.name: t.optimizer.algorithm_name for t in config.model.embeddings.tables}
    tables = sorted({table for p in problems if (table := table_in_key(p)) is not None})
    named = ", ".join(f"{name!r} ({optimizers.get(name, '?')})" for name in tables)
    what = f"table{'s' if len(tables) > 1 else ''} {named}" if tables else "the relations"
    why = "the checkpoint holds no such state (another optimizer wrote it)"
    if any(" there but " in problem for problem in problems):  # same state, another shape
        why = (
            "row-wise Adagrad keeps one value per row and column shard, so its state does not "
            "move to a plan with another number of column shards (column_wise)"
        )
    return (
        f"cannot resume the optimizer state of {what} from {path} ({problems[0]}): {why}; set "
        "training.resume_optimizer: false to restore the weights and start the optimizer fresh"
    )
