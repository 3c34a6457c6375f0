"""Turn a `TwhinModel` into a TorchRec `DistributedModelParallel` with its optimizers.

The steps, in order: build the model on the meta device, attach each table's fused optimizer,
plan the sharding (planner.py), shard with DMP, fill the tables deterministically (init.py), and
combine the optimizers with one learning-rate schedule per param group (optimizers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer

from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.parallel.init import initialize_tables
from tml.projects.twhin.parallel.optimizers import (
    LearningRates,
    apply_fused_optimizers,
    combined_optimizer,
)
from tml.projects.twhin.parallel.planner import describe_plan, make_sharder, plan_tables


@dataclass
class ShardedTwhin:
    """The distributed model, its optimizer, the learning rates, and the plan for the log."""

    model: DistributedModelParallel
    optimizer: CombinedOptimizer
    learning_rates: LearningRates
    plan: dict[str, str]  # table -> "sharding_type on ranks [...]"

    def set_learning_rates(self, step: int) -> dict[str, float]:
        """Set every param group to the rate of `step`; returns each schedule's rate."""
        return self.learning_rates.set(step)


def shard_model(
    config: TwhinModelConfig,
    device: torch.device,
    seed: int,
    world_size: int,
    local_size: int,
    lookups_per_step: int,
    anchor: float = 0.0,
) -> ShardedTwhin:
    """Build, plan, shard and initialise the model; build its combined optimizer.

    `lookups_per_step`: rows a rank looks up per step (`SlotLayout.num_slots`), for the planner.
    `anchor`: `warm_start.anchor` (above 0, the model keeps a frozen copy of the tables).
    """
    model = TwhinModel(config, table_device=torch.device("meta"), anchor=anchor)
    model.scorer.to(device)
    if model.anchors is not None:
        model.anchor_term.to(device)
    apply_fused_optimizers(model, config, device.type)
    sharder = make_sharder()
    plan = plan_tables(model, config, sharder, device, world_size, local_size, lookups_per_step)
    # DDP around the scorer only synchronises the relation parameters' gradients across ranks;
    # alone, it would cost an all-reduce and hooks every step for nothing.
    sharded = DistributedModelParallel(
        model, device=device, plan=plan, sharders=[sharder], init_data_parallel=world_size > 1
    )
    initialize_tables(sharded, config, seed)
    optimizer, learning_rates = combined_optimizer(sharded, config)
    return ShardedTwhin(sharded, optimizer, learning_rates, describe_plan(plan))
