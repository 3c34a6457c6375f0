"""Where each table lives: the TorchRec sharder, the planner's constraints, and the plan.

Decided here, outside the model code (torchrec's split): which sharding types the planner may
use, per-table constraints from the config, and a one-line description of the plan for the log.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import CacheParams, ShardingPlan

from tml.core.config import ConfigError
from tml.projects.twhin.models.config import ComputeKernel, ShardingType, TwhinModelConfig

# Sharding types the planner may pick by default. data_parallel is left out on purpose: TorchRec
# silently drops fused optimizers on replicated tables, and replicating a big table is rarely wanted.
DEFAULT_SHARDING_TYPES = [
    ShardingType.TABLE_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
]


class TwhinSharder(EmbeddingBagCollectionSharder):
    """EBC sharder that offers every model-parallel sharding type on every device.

    TorchRec 1.8 offers row_wise, table_row_wise and grid_shard only on CUDA (its CPU list is
    data_parallel, table_wise, column_wise, table_column_wise), although the CPU kernels run them
    correctly over gloo (checked against a dense reference; see docs/stack.md). Opening the gate
    keeps CPU and GPU on one code path.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        return [sharding.value for sharding in ShardingType]


def make_sharder() -> TwhinSharder:
    # One TBE kernel per table, so each table's learning rate can follow its own schedule.
    return TwhinSharder(fused_params={"use_one_tbe_per_table": True})


def check_compute_kernels(config: TwhinModelConfig, device_type: str) -> None:
    """UVM kernels put tables in GPU-mapped host memory: a CUDA-only choice, refused early."""
    for index, table in enumerate(config.embeddings.tables):
        if table.compute_kernel is not ComputeKernel.FUSED and device_type != "cuda":
            raise ConfigError(
                f"model.embeddings.tables[{index}].compute_kernel: {table.compute_kernel.value} "
                f"needs a CUDA device (this run is on {device_type}, where tables already live "
                "in host memory); remove it or use fused"
            )


def make_topology(device: torch.device, world_size: int, local_size: int) -> Topology:
    """The devices the planner places tables on, with the memory this GPU really has.

    Without `hbm_cap` TorchRec plans every GPU as 32 GiB (an H100 has 80). On CPU the topology
    has no HBM and TorchRec's host-memory default (128 GiB per rank) is left alone: host memory
    only decides whether a plan is feasible (placement follows the estimated step time), so a
    table too large for the host fails when it is allocated instead of in the planner, and the
    memory a container may use is its cgroup limit, which the host's size does not tell.
    """
    hbm_cap = (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    )
    return Topology(
        world_size=world_size,
        local_world_size=local_size,
        compute_device=device.type,
        hbm_cap=hbm_cap,
    )


def make_planner(
    config: TwhinModelConfig,
    device: torch.device,
    world_size: int,
    local_size: int,
    lookups_per_step: int,
) -> EmbeddingShardingPlanner:
    """TorchRec's planner for these tables on this topology.

    `lookups_per_step`: rows each rank looks up per step (`SlotLayout.num_slots`), the batch
    size of TorchRec's estimates of step time and buffer memory (its default assumes 512).
    """
    return EmbeddingShardingPlanner(
        topology=make_topology(device, world_size, local_size),
        batch_size=lookups_per_step,
        constraints=table_constraints(config),
    )


def table_constraints(config: TwhinModelConfig) -> dict[str, ParameterConstraints]:
    """Per table: its forced sharding type (else the defaults), compute kernel and UVM cache.
    Public so that benchmarks/scaling plans clusters with exactly the trainer's constraints."""
    return {
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


def plan_tables(
    model: torch.nn.Module,
    config: TwhinModelConfig,
    sharder: TwhinSharder,
    device: torch.device,
    world_size: int,
    local_size: int,
    lookups_per_step: int,
) -> ShardingPlan:
    """The planner's plan for every table (a collective: all ranks call it, rank 0 decides)."""
    planner = make_planner(config, device, world_size, local_size, lookups_per_step)
    try:
        return planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    except PlannerError as exc:  # no plan fits these tables on this world: retrying cannot help
        raise ConfigError(
            f"model.embeddings: TorchRec's planner found no sharding plan ({exc})"
        ) from None


def describe_plan(plan: Any) -> dict[str, str]:
    """table -> "sharding_type on ranks [...]", for the start log."""
    described = {}
    for module_plan in plan.plan.values():
        for table, parameter_sharding in module_plan.items():
            ranks = sorted(set(parameter_sharding.ranks or []))
            described[table] = f"{parameter_sharding.sharding_type} on ranks {ranks}"
    return described
