"""Everything docs/scaling.md says about one cluster size: the planner's outcomes (with this doc's
cluster, with the trainer's own topology, at a larger batch, with table-row-wise forced) and their
costs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.scaling.assumptions import Cluster, Workload
from benchmarks.scaling.costs import (
    Costs,
    Placement,
    Traffic,
    placement_costs,
    sequence_output_dist,
)
from benchmarks.scaling.planner import PlanOutcome, plan, plan_that_fits, trainer_topology
from benchmarks.scaling.ranking import RankingCost, ranking_cost

LARGE_BATCH = 100_000  # the smaller batch of the measured H100 scorer rate


@dataclass(frozen=True)
class ClusterReport:
    """Everything the doc says about one cluster size."""

    world_size: int
    outcome: PlanOutcome  # the plan with this doc's topology and batch
    costs: Costs | None
    ranking: RankingCost | None  # sharded ranking on `outcome`'s plan
    trainer: PlanOutcome  # the trainer's Topology, with the tables configured as `outcome`'s
    large_batch: PlanOutcome  # B = LARGE_BATCH
    large_batch_costs: Costs | None
    table_row_wise: PlanOutcome  # every table forced to table_row_wise
    table_row_wise_costs: Costs | None
    sequence_output: Traffic  # unpooled lookups, every table row-wise on all GPUs
    row_wise_ranking: RankingCost  # ranking with every table row-wise on all GPUs


def cluster_report(work: Workload, cluster: Cluster, world_size: int) -> ClusterReport:
    """Plan `world_size` GPUs (also with the trainer's topology, and at B = LARGE_BATCH)."""
    outcome = plan_that_fits(work, cluster, world_size)
    large = dataclasses.replace(work, batch_size=LARGE_BATCH)
    large_outcome = plan_that_fits(large, cluster, world_size)
    row_wise = Placement.row_wise_everywhere(work, world_size)
    table_row_wise = plan_that_fits(work, cluster, world_size, "table_row_wise")
    return ClusterReport(
        world_size=world_size,
        outcome=outcome,
        costs=_costs(outcome, work, cluster),
        ranking=ranking_cost(outcome.placement, work, cluster) if outcome.placement else None,
        trainer=plan(work, trainer_topology(cluster, world_size), outcome.settings),
        large_batch=large_outcome,
        large_batch_costs=_costs(large_outcome, large, cluster),
        table_row_wise=table_row_wise,
        table_row_wise_costs=_costs(table_row_wise, work, cluster),
        sequence_output=sequence_output_dist(row_wise, work, cluster),
        row_wise_ranking=ranking_cost(row_wise, work, cluster),
    )


def _costs(outcome: PlanOutcome, work: Workload, cluster: Cluster) -> Costs | None:
    return placement_costs(outcome.placement, work, cluster) if outcome.placement else None


def edges_per_second(work: Workload, world_size: int, costs: Costs) -> float:
    """Positive edges trained per second by the whole cluster."""
    return work.batch_size * world_size / costs.step.seconds
