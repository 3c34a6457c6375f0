"""TorchRec's planner on CPU for GPU clusters, with the trainer's own model, sharder and constraints.

The planner needs no GPU: a `Topology` with compute_device="cuda" only sets per-device HBM
(`hbm_cap`) and bandwidths, and the model's tables live on the meta device. The storage and perf
estimators read the optimizer class that `apply_fused_optimizers` attaches to each weight
(row-wise Adagrad: one fp32 per row) and the compute kernel from the constraints, so the inputs
are the trainer's own (tml/projects/twhin/parallel/): the meta model with its fused optimizers,
`make_sharder()`, `table_constraints(config)` and the lookups per step as the batch size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import PlannerError, Stats

from benchmarks.scaling.assumptions import Cluster, Workload
from benchmarks.scaling.costs import Placement, Shard, TablePlan
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.parallel.optimizers import apply_fused_optimizers
from tml.projects.twhin.parallel.planner import make_sharder, table_constraints

CACHE_LOAD_FACTORS = [round(0.05 * step, 2) for step in range(1, 21)]  # 0.05 ... 1.0
TORCHREC_DEFAULT_LOAD_FACTOR = 0.2
UVM_CACHING = "fused_uvm_caching"


@dataclass(frozen=True)
class TableSetting:
    """What a table's config may set for the planner: `compute_kernel`, `cache_load_factor`,
    `sharding_type` (None: the planner chooses among the defaults)."""

    compute_kernel: str = "fused"
    cache_load_factor: float | None = None
    sharding_type: str | None = None


@dataclass(frozen=True)
class PlanOutcome:
    world_size: int
    settings: dict[str, TableSetting]
    placement: Placement | None  # None: the planner found no plan
    error: str | None = None

    @property
    def cached_tables(self) -> list[str]:
        """The tables with a UVM cache, in plan order."""
        return [t.table for t in self.placement.tables if t.cached] if self.placement else []


class _KeepBestPlan(Stats):
    """Receives the chosen sharding options (with their storage and perf estimates) from the
    planner, in place of the default stats table it would print."""

    def __init__(self) -> None:
        self.best: list[Any] = []

    def log(self, *args: Any, **kwargs: Any) -> None:
        self.best = kwargs["best_plan"]


def model_config(work: Workload, settings: dict[str, TableSetting]) -> TwhinModelConfig:
    """The workload as the trainer's model config (translation + dot, row-wise Adagrad)."""
    optimizer = {"rowwise_adagrad": {"lr": 0.1}}
    tables = []
    for table in work.tables:
        setting = settings.get(table.name, TableSetting())
        tables.append(
            dict(
                name=table.name,
                num_embeddings=table.rows,
                embedding_dim=table.dim,
                optimizer=optimizer,
                compute_kernel=setting.compute_kernel,
                cache_load_factor=setting.cache_load_factor,
                sharding_type=setting.sharding_type,
            )
        )
    relations = [
        dict(name=r.name, lhs=r.lhs, rhs=r.rhs, operator="translation") for r in work.relations
    ]
    return TwhinModelConfig.model_validate(
        dict(
            embeddings={"tables": tables},
            relations=relations,
            translation_optimizer={"adagrad": {"lr": 0.1}},
        )
    )


def cluster_topology(cluster: Cluster, world_size: int) -> Topology:
    """The cluster as TorchRec sees it: H100 HBM and bandwidths (TorchRec wants bytes per ms)."""
    return Topology(
        world_size=world_size,
        local_world_size=min(world_size, cluster.gpus_per_host),
        compute_device="cuda",
        hbm_cap=cluster.hbm_bytes,
        ddr_cap=cluster.host_bytes_per_gpu,
        hbm_mem_bw=cluster.hbm_bw / 1000,
        hbm_to_ddr_mem_bw=cluster.pcie_bw / 1000,
        intra_host_bw=cluster.intra_host_bw / 1000,
        inter_host_bw=cluster.inter_host_bw / 1000,
    )


def trainer_topology(cluster: Cluster, world_size: int) -> Topology:
    """The Topology `make_topology` builds on these GPUs: their memory (`hbm_cap`, which the
    trainer reads from the device), TorchRec's default bandwidths and host memory."""
    return Topology(
        world_size=world_size,
        local_world_size=min(world_size, cluster.gpus_per_host),
        compute_device="cuda",
        hbm_cap=cluster.hbm_bytes,
    )


def plan(
    work: Workload, topology: Topology, settings: dict[str, TableSetting] | None = None
) -> PlanOutcome:
    """Run the planner as the trainer does (`make_planner`): the meta model with its fused
    optimizers, the trainer's sharder and constraints, and the slots per step as batch size."""
    settings = settings or {}
    config = model_config(work, settings)
    model = TwhinModel(config, table_device=torch.device("meta"))
    apply_fused_optimizers(model, config, "cuda")
    stats = _KeepBestPlan()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "construct Topology via TopologyFactory", reservation
        planner = EmbeddingShardingPlanner(
            topology=topology,
            batch_size=work.slots,
            constraints=table_constraints(config),
            stats=[stats],
        )
        try:
            planner.plan(model, [make_sharder()])
        except PlannerError as error:
            reason = str(error).splitlines()[0].strip()
            return PlanOutcome(topology.world_size, settings, None, reason)
    tables = tuple(_table_plan(option) for option in stats.best)
    return PlanOutcome(topology.world_size, settings, Placement(topology.world_size, tables))


def _table_plan(option: Any) -> TablePlan:
    shards = []
    for shard in option.shards:
        perf = shard.perf
        shards.append(
            Shard(
                rank=shard.rank,
                rows=shard.size[0],
                planner_hbm=shard.storage.hbm,
                planner_ddr=shard.storage.ddr,
                planner_kernel_ms=perf.fwd_compute + perf.bwd_compute + perf.prefetch_compute,
                planner_comms_ms=perf.input_dist_comms + perf.fwd_comms + perf.bwd_comms,
            )
        )
    cache = option.cache_params
    return TablePlan(
        table=option.name,
        sharding_type=option.sharding_type,
        compute_kernel=option.compute_kernel,
        cache_load_factor=cache.load_factor if cache is not None else None,
        shards=tuple(shards),
    )


def plan_that_fits(
    work: Workload, cluster: Cluster, world_size: int, sharding_type: str | None = None
) -> PlanOutcome:
    """The fused plan; if none fits, UVM caching for the largest tables (largest first, adding
    the next while even the smallest cache does not fit) at the largest cache load factor, in
    steps of 0.05, that the planner accepts. `sharding_type` forces one on every table."""
    topology = cluster_topology(cluster, world_size)
    settings = {t.name: TableSetting(sharding_type=sharding_type) for t in work.tables}
    outcome = plan(work, topology, settings)
    for table in sorted(work.tables, key=lambda t: -t.rows * t.dim):
        if outcome.placement is not None:
            return outcome

        def cached(index: int, name: str = table.name) -> PlanOutcome:
            setting = TableSetting(UVM_CACHING, CACHE_LOAD_FACTORS[index], sharding_type)
            return plan(work, topology, {**settings, name: setting})

        outcome = cached(0)
        if outcome.placement is None:  # keep the smallest cache and try the next table too
            settings[table.name] = TableSetting(UVM_CACHING, CACHE_LOAD_FACTORS[0], sharding_type)
            continue
        fits, too_big = 0, len(CACHE_LOAD_FACTORS)  # bisect: more cache, more HBM
        while too_big - fits > 1:
            middle = (fits + too_big) // 2
            if (candidate := cached(middle)).placement is not None:
                fits, outcome = middle, candidate
            else:
                too_big = middle
    return outcome
