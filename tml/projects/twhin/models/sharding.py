"""Turn a `TwhinModel` into a TorchRec `DistributedModelParallel` with fused table optimizers.

Decided here, outside the model code: per-table fused optimizers, which sharding types the
planner may use, the plan itself, deterministic initialisation of the sharded tables, and the
combined optimizer with one learning-rate schedule per table plus one for the relation operators.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import CacheParams
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tml.core.config import ConfigError
from tml.core.lr_schedules import LearningRate, learning_rate_at
from tml.core.optimizers import dense_optimizer_factory, fused_table_optimizer
from tml.projects.twhin.models.config import ComputeKernel, ShardingType, TwhinModelConfig
from tml.projects.twhin.models.model import TwhinModel

log = logging.getLogger(__name__)

# Sharding types the planner may pick by default. data_parallel is left out on purpose: TorchRec
# silently drops fused optimizers on replicated tables, and replicating a big table is rarely wanted.
DEFAULT_SHARDING_TYPES = [
    ShardingType.TABLE_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
]
RELATIONS_GROUP = "relations"
_TABLE_PARAMETER = re.compile(r"embedding_bags\.([^.]+)\.weight")


class TwhinSharder(EmbeddingBagCollectionSharder):
    """EBC sharder that offers every model-parallel sharding type on every device.

    TorchRec only offers row-wise types on CUDA, although the CPU kernels run them correctly
    (shared/stack.md §2); opening the gate keeps CPU and GPU on one code path.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return [sharding.value for sharding in ShardingType]


@dataclass
class ShardedTwhin:
    """The distributed model, its optimizer, and the schedule of each optimizer param group."""

    model: DistributedModelParallel
    optimizer: CombinedOptimizer
    schedules: dict[str, LearningRate]  # table name or "relations" -> its schedule
    param_groups: list[tuple[str, dict[str, Any]]]  # this rank's (schedule name, param group)
    plan: dict[str, str]  # table -> "sharding_type on ranks [...]"

    def set_learning_rates(self, step: int) -> dict[str, float]:
        """Set this rank's param groups to the rates of `step` (the fused kernels read them in
        zero_grad(), before backward); returns every schedule's rate, for the logs."""
        rates = {
            name: learning_rate_at(schedule, step) for name, schedule in self.schedules.items()
        }
        for name, group in self.param_groups:
            group["lr"] = rates[name]
        return rates


def check_compute_kernels(config: TwhinModelConfig, device_type: str) -> None:
    """UVM kernels put tables in GPU-mapped host memory: a CUDA-only choice, refused early."""
    for index, table in enumerate(config.embeddings.tables):
        if table.compute_kernel is not ComputeKernel.FUSED and device_type != "cuda":
            raise ConfigError(
                f"model.embeddings.tables[{index}].compute_kernel: {table.compute_kernel.value} "
                f"needs a CUDA device (this run is on {device_type}, where tables already live "
                "in host memory); remove it or use fused"
            )


def shard_model(
    config: TwhinModelConfig, device: torch.device, seed: int, world_size: int, local_size: int
) -> ShardedTwhin:
    """Build, plan, shard and initialise the model; build its combined optimizer."""
    model = TwhinModel(config, table_device=torch.device("meta"))
    model.scorer.to(device)
    for index, table in enumerate(config.embeddings.tables):
        fused = fused_table_optimizer(
            table.optimizer, device.type, f"model.embeddings.tables[{index}].optimizer"
        )
        weight = model.tables.embedding_bags[table.name].weight
        apply_optimizer_in_backward(fused.optimizer_class, [weight], dict(fused.kwargs))
    # One TBE kernel per table, so each table's learning rate can follow its own schedule.
    sharder = TwhinSharder(fused_params={"use_one_tbe_per_table": True})
    constraints = {
        table.name: ParameterConstraints(
            sharding_types=[table.sharding_type.value]
            if table.sharding_type
            else DEFAULT_SHARDING_TYPES,
            compute_kernels=[table.compute_kernel.value],
            cache_params=CacheParams(load_factor=table.cache_load_factor)
            if table.cache_load_factor is not None
            else None,
        )
        for table in config.embeddings.tables
    }
    planner = EmbeddingShardingPlanner(
        topology=Topology(
            world_size=world_size, local_world_size=local_size, compute_device=device.type
        ),
        constraints=constraints,
    )
    try:
        plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    except PlannerError as exc:  # no plan fits these tables on this world: retrying cannot help
        raise ConfigError(
            f"model.embeddings: TorchRec's planner found no sharding plan ({exc})"
        ) from None
    # DDP around the scorer only synchronises the relation parameters' gradients across ranks;
    # alone, it would cost an all-reduce and hooks every step for nothing.
    sharded = DistributedModelParallel(
        model, device=device, plan=plan, sharders=[sharder], init_data_parallel=world_size > 1
    )
    initialize_tables(sharded, config, seed)

    dense_parameters = dict(in_backward_optimizer_filter(sharded.named_parameters()))
    optimizers = [("tables", sharded.fused_optimizer)]
    relations_optimizer = None
    if dense_parameters:  # e.g. the identity operator has no parameters to optimize
        relations_optimizer = KeyedOptimizerWrapper(
            dense_parameters,
            dense_optimizer_factory(config.translation_optimizer, "model.translation_optimizer"),
        )
        optimizers.append((RELATIONS_GROUP, relations_optimizer))
    optimizer = CombinedOptimizer(optimizers)
    schedules = {table.name: table.optimizer.schedule() for table in config.embeddings.tables}
    schedules[RELATIONS_GROUP] = config.translation_optimizer.schedule()
    return ShardedTwhin(
        model=sharded,
        optimizer=optimizer,
        schedules=schedules,
        param_groups=_named_param_groups(sharded, relations_optimizer),
        plan=_describe_plan(plan),
    )


def _named_param_groups(
    model: DistributedModelParallel, relations_optimizer: Any
) -> list[tuple[str, dict[str, Any]]]:
    """Pair each local param group with the schedule that drives it (one table per group)."""
    names = {id(param): name for name, param in model.fused_optimizer.params.items()}
    groups = []
    for group in model.fused_optimizer.param_groups:
        tables = {
            match.group(1)
            for param in group["params"]
            if (match := _TABLE_PARAMETER.search(names.get(id(param), "")))
        }
        if len(tables) != 1:
            raise RuntimeError(f"expected one table per fused optimizer group, got {tables}")
        groups.append((tables.pop(), group))
    if relations_optimizer is not None:
        groups += [(RELATIONS_GROUP, group) for group in relations_optimizer.param_groups]
    return groups


def _describe_plan(plan: Any) -> dict[str, str]:
    described = {}
    for module_plan in plan.plan.values():
        for table, parameter_sharding in module_plan.items():
            ranks = sorted(set(parameter_sharding.ranks or []))
            described[table] = f"{parameter_sharding.sharding_type} on ranks {ranks}"
    return described


INIT_BLOCK_ROWS = 65_536


def table_weights(model: torch.nn.Module) -> dict[str, Any]:
    """table name -> its (sharded) weight in the model's state dict."""
    weights = {}
    for key, value in model.state_dict().items():
        if match := _TABLE_PARAMETER.search(key):
            weights[match.group(1)] = value
    return weights


def gather_tables(
    model: torch.nn.Module, config: TwhinModelConfig, rank: int, device: torch.device
) -> dict[str, torch.Tensor] | None:
    """Full tables on rank 0 (None elsewhere); a collective every rank must call."""
    weights = table_weights(model)
    full = {}
    for table in config.embeddings.tables:  # the same order on every rank
        weight = weights[table.name]
        if hasattr(weight, "gather"):  # ShardedTensor
            out = (
                torch.empty(weight.size(), dtype=weight.dtype, device=device) if rank == 0 else None
            )
            weight.gather(dst=0, out=out)
        else:
            out = weight.detach().clone()
        full[table.name] = out.cpu() if out is not None else None
    return full if rank == 0 else None


def dense_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The relation operators' parameters (replicated on every rank), on CPU."""
    return {
        key: value.detach().cpu()
        for key, value in model.state_dict().items()
        if key.startswith("scorer.")
    }


def local_shards(weight: Any) -> list[tuple[torch.Tensor, int, int]]:
    """(tensor view, first row, first column) of each shard of a table held by this rank."""
    if isinstance(weight, torch.Tensor) and not hasattr(weight, "local_shards"):
        return [(weight, 0, 0)]
    return [
        (shard.tensor, shard.metadata.shard_offsets[0], shard.metadata.shard_offsets[1])
        for shard in weight.local_shards()
    ]


@torch.no_grad()
def initialize_tables(model: torch.nn.Module, config: TwhinModelConfig, seed: int) -> None:
    """Fill every local shard from N(0, init_std²), identically for any sharding or world size.

    Values are generated in fixed row blocks seeded by (seed, table, block), so a rank creates only
    the blocks its shards overlap (memory stays bounded) and a row's initial value never depends on
    where the row lives.
    """
    weights = table_weights(model)
    for table_index, table in enumerate(config.embeddings.tables):
        for shard, row0, col0 in local_shards(weights[table.name]):
            rows, cols = shard.shape
            first_block, last_block = row0 // INIT_BLOCK_ROWS, (row0 + rows - 1) // INIT_BLOCK_ROWS
            for block in range(first_block, last_block + 1):
                block_start = block * INIT_BLOCK_ROWS
                block_rows = min(INIT_BLOCK_ROWS, table.num_embeddings - block_start)
                rng = np.random.default_rng([seed, table_index, block])
                values = rng.standard_normal((block_rows, table.embedding_dim), dtype=np.float32)
                values *= table.effective_init_std
                lo, hi = max(row0, block_start), min(row0 + rows, block_start + block_rows)
                source = torch.from_numpy(
                    values[lo - block_start : hi - block_start, col0 : col0 + cols]
                )
                shard[lo - row0 : hi - row0].copy_(source)
