"""The optimizers of a sharded model and the learning rate of each of their param groups.

Each table gets its own fused optimizer (applied in backward by fbgemm) and its own schedule;
the relation operators' parameters share one dense optimizer (`translation_optimizer`). Every
local param group is paired with the schedule that drives it, so one call per step sets them all.
"""

from __future__ import annotations

from typing import Any

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tml.core.lr_schedules import LearningRate, learning_rate_at
from tml.core.optimizers import dense_optimizer_factory, fused_table_optimizer
from tml.projects.twhin.models.anchor import ANCHOR_SUFFIX
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.model import TwhinModel, table_of_key

RELATIONS_GROUP = "relations"
"""The schedule name of the relation operators' parameters (tables go by their own names)."""


def apply_fused_optimizers(model: TwhinModel, config: TwhinModelConfig, device_type: str) -> None:
    """Attach each table's fused optimizer to its (unsharded) weight, before DMP shards it."""
    for index, table in enumerate(config.embeddings.tables):
        fused = fused_table_optimizer(
            table.optimizer, device_type, f"model.embeddings.tables[{index}].optimizer"
        )
        weight = model.tables.embedding_bags[table.name].weight
        apply_optimizer_in_backward(fused.optimizer_class, [weight], dict(fused.kwargs))
    if model.anchors is not None:  # the frozen copy: no gradient reaches it (models/anchor.py)
        frozen = list(model.anchors.parameters())
        apply_optimizer_in_backward(torch.optim.SGD, frozen, {"lr": 0.0})


class LearningRates:
    """The schedule of every table and of the relations, and this rank's param groups."""

    def __init__(
        self, schedules: dict[str, LearningRate], param_groups: list[tuple[str, dict[str, Any]]]
    ) -> None:
        self.schedules = schedules  # table name or RELATIONS_GROUP -> its schedule
        self.param_groups = param_groups  # this rank's (schedule name, param group)

    def set(self, step: int) -> dict[str, float]:
        """Set this rank's param groups to the rates of `step` (the fused kernels read them in
        zero_grad(), before backward); returns every schedule's rate, for the logs."""
        rates = {
            name: learning_rate_at(schedule, step) for name, schedule in self.schedules.items()
        }
        for name, group in self.param_groups:
            group["lr"] = rates[name]
        return rates


def combined_optimizer(
    model: DistributedModelParallel, config: TwhinModelConfig
) -> tuple[CombinedOptimizer, LearningRates]:
    """The tables' fused optimizers plus the relations' dense one, and their learning rates."""
    dense_parameters = dict(in_backward_optimizer_filter(model.named_parameters()))
    optimizers: list[tuple[str, Any]] = [("tables", model.fused_optimizer)]
    relations_optimizer = None
    if dense_parameters:  # e.g. the identity operator has no parameters to optimize
        relations_optimizer = KeyedOptimizerWrapper(
            dense_parameters,
            dense_optimizer_factory(config.translation_optimizer, "model.translation_optimizer"),
        )
        optimizers.append((RELATIONS_GROUP, relations_optimizer))
    schedules = {table.name: table.optimizer.schedule() for table in config.embeddings.tables}
    schedules[RELATIONS_GROUP] = config.translation_optimizer.schedule()
    rates = LearningRates(schedules, _named_param_groups(model, relations_optimizer))
    return CombinedOptimizer(optimizers), rates


def _named_param_groups(
    model: DistributedModelParallel, relations_optimizer: torch.optim.Optimizer | None
) -> list[tuple[str, dict[str, Any]]]:
    """Pair each local param group with the schedule that drives it (one table per group)."""
    names = {id(param): name for name, param in model.fused_optimizer.params.items()}
    groups = []
    for group in model.fused_optimizer.param_groups:
        tables = {
            table
            for param in group["params"]
            if (table := table_of_key(names.get(id(param), ""))) is not None
        }
        if len(tables) != 1:
            raise RuntimeError(f"expected one table per fused optimizer group, got {tables}")
        table = tables.pop()
        if not table.endswith(ANCHOR_SUFFIX):  # the anchor's frozen copy is never updated
            groups.append((table, group))
    if relations_optimizer is not None:
        groups += [(RELATIONS_GROUP, group) for group in relations_optimizer.param_groups]
    return groups
