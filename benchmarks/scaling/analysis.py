"""docs/scaling.md's analysis: the pooled lookup layout, table-row-wise forced, the trainer's
own plans, the cost of sharded ranking, and the findings."""

from __future__ import annotations

import dataclasses

from torchrec.distributed.planner.constants import (
    CROSS_NODE_BANDWIDTH,
    DDR_CAP,
    INTRA_NODE_BANDWIDTH,
)

from benchmarks.scaling.assumptions import FP32, Cluster, Workload
from benchmarks.scaling.costs import Costs, pooled_output_rows
from benchmarks.scaling.markdown import (
    duration,
    gb,
    markdown_table,
    ms,
    plan_cells,
    plans_table,
    size,
)
from benchmarks.scaling.planner import PlanOutcome
from benchmarks.scaling.ranking import BLOCK_ROWS, GROUP_EDGES, SCORE_BLOCK_ROWS, ranking_memory
from benchmarks.scaling.report import LARGE_BATCH, ClusterReport, edges_per_second


def layout_section(work: Workload, cluster: Cluster, reports: list[ClusterReport]) -> str:
    """Why the pooled lookups bound scaling: buffers, bytes, unpooled estimate, batch."""
    rows = []
    for report in reports:
        world, costs = report.world_size, report.costs
        buffer = pooled_output_rows("row_wise", world, work.slots) * work.dim * FP32
        sequence = report.sequence_output
        planned = (
            f"{size(costs.output.intra + costs.output.inter)}, {ms(costs.step.output_dist / 2)}"
            if costs
            else "no plan"
        )
        rows.append(
            [str(world), gb(buffer), planned,
             f"{size(sequence.intra + sequence.inter)}, {ms(sequence.seconds)}",
             _batch_cell(work, report.outcome, report.costs),
             _batch_cell(dataclasses.replace(work, batch_size=LARGE_BATCH), report.large_batch,
                         report.large_batch_costs)]
        )  # fmt: skip
    largest = reports[-1].world_size
    large_slots = dataclasses.replace(work, batch_size=LARGE_BATCH).slots
    large_buffer = pooled_output_rows("row_wise", largest, large_slots) * work.dim * FP32
    header = ["GPUs", "pooled output per table and GPU", "output bytes and time, forward (plan)"]
    header += ["same, unpooled, every table row-wise on all GPUs (estimate)"]
    header += [f"B = {work.batch_size:,}: step, edges/s", f"B = {LARGE_BATCH:,}: step, edges/s"]
    return f"""## The pooled lookup layout

Each table's feature has a bag at every one of a GPU's S slots (size 1 at the table's own slots,
empty elsewhere), so the `EmbeddingBagCollection` returns S pooled rows per table per GPU,
whatever the table. A GPU holding a table-wise, row-wise or table-row-wise shard computes those
rows for all W GPUs, W × S × {work.dim} × 4 bytes per table, and reduce-scatters (or sends)
them: its output buffers and traffic grow with the cluster, not with the lookups it serves.
Unpooled (sequence) lookups, as TorchRec's `EmbeddingCollection` does them, would send back only
the rows looked up; that column is an estimate of a layout the trainer does not have.

{markdown_table(header, rows)}

A larger per-GPU batch feeds the scorer better but multiplies the pooled buffers, which UVM
caching does not shrink (it moves table rows, not lookup buffers): at B = {LARGE_BATCH:,} one
table's pooled output is {gb(large_buffer)} per GPU on {largest} GPUs."""


def _batch_cell(work: Workload, outcome: PlanOutcome, costs: Costs | None) -> str:
    if costs is None:
        return "no plan"
    edges = edges_per_second(work, outcome.world_size, costs)
    assert outcome.placement is not None
    cached = [f"{t.table} {t.cache_load_factor:.2f}" for t in outcome.placement.tables if t.cached]
    uvm = f" (UVM cache: {', '.join(cached)})" if cached else ""
    return f"{ms(costs.step.seconds)}, {edges / 1e6:,.1f} M{uvm}"


def trainer_section(work: Workload, cluster: Cluster, reports: list[ClusterReport]) -> str:
    """The plans the trainer's own topology gives for the same config."""
    rows = []
    for report in reports:
        trainer = plan_cells(report.trainer, work, cluster)
        same = trainer == plan_cells(report.outcome, work, cluster)
        rows.append([str(report.world_size), *trainer, "yes" if same else "**no**"])
    header = ["GPUs", *(t.name for t in work.tables), "same as this doc's plan"]
    gib_per_s = 1000 / 2**30  # TorchRec's bandwidths are bytes per ms
    return f"""## What the trainer plans

The trainer's planner (`make_planner`, tml/projects/twhin/parallel/planner.py) gets the same
model, sharder, constraints and batch (S = {work.slots:,} lookups per step), and a
`Topology(world_size, local_world_size, compute_device, hbm_cap)` whose `hbm_cap` is the GPU's
own memory (`torch.cuda.get_device_properties`); it keeps TorchRec's default bandwidths
({INTRA_NODE_BANDWIDTH * gib_per_s:.0f} GiB/s in a host, {CROSS_NODE_BANDWIDTH * gib_per_s:.1f}
GiB/s between hosts) and host memory ({DDR_CAP / 2**30:.0f} GiB per GPU). With the tables
configured as in the plans above ("What to configure"), it plans:

{markdown_table(header, rows)}"""


def ranking_section(work: Workload, cluster: Cluster, reports: list[ClusterReport]) -> str:
    """The cost of sharded filtered ranking on each plan."""
    rows = []
    for report in reports:
        cost = report.ranking
        if cost is None:
            rows.append([str(report.world_size)] + ["no plan"] * 6)
            continue
        rows.append(
            [str(report.world_size), f"{cost.flops:.2e}", duration(cost.gemm_s),
             f"{cost.score_blocks:,}, {duration(cost.blocks_s)}",
             f"{size(cost.host_reads)}, {duration(cost.pcie_s)}" if cost.host_reads else "none",
             f"**{duration(cost.seconds)}**", duration(report.row_wise_ranking.seconds)]
        )  # fmt: skip
    header = ["GPUs", "FLOPs, busiest GPU", "GEMMs", "score blocks, their fixed cost"]
    header += ["UVM rows over PCIe", f"time, {work.eval_queries:,} edges"]
    header += ["time if every table were row-wise on all GPUs"]
    memory = "; ".join(f"{name} {size(n)}" for name, n in ranking_memory(work).items())
    block = size(ranking_memory(work)["score block"])
    return f"""## Evaluation: sharded filtered ranking at this size

The trainer's ranking (`tml/projects/twhin/eval/sharded_ranking.py`) never gathers a table: every
GPU looks up the queries' rows (one all-reduce per pass), scores them against the rows it holds,
counts the better and tied candidates after leaving out the known true edges in its rows, and
one all-reduce sums the counts. Q = {work.eval_queries:,} ranked edges (0.1 % of the edges, as
the bench holds out), both sides: tails against the relation's rhs table, heads against its lhs
table, 2 · Q · rows · {work.dim} FLOPs per side. Edges go in passes of {GROUP_EDGES:,} of one
relation; each pass sweeps the GPU's rows in blocks of {BLOCK_ROWS:,} and scores them
{SCORE_BLOCK_ROWS:,} rows at a time (`SCORES_PER_BLOCK`). Memory beyond a GPU's shards:
{memory}. Estimated with GEMMs at {cluster.eval_flops / 1e12:.0f} TFLOPS, a fixed
{cluster.score_block_overhead_s * 1e6:.0f} µs per score block (some 20 small kernels and two
host syncs each; assumed, not measured) and UVM rows read over PCIe by every pass that scores
their table:

{markdown_table(header, rows)}

A table-row-wise table lives on one host, so its whole ranking runs on those 8 GPUs while the
others wait; the last column spreads every table over all GPUs. Score blocks sized for a CPU
({block}) make a GPU pay their fixed cost millions of times: larger blocks on GPUs would leave the
GEMMs."""


def table_row_wise_section(work: Workload, cluster: Cluster, reports: list[ClusterReport]) -> str:
    """The plans with table_row_wise forced on every table."""
    plans = [(report.table_row_wise, report.table_row_wise_costs) for report in reports]
    return f"""## Asking for table-row-wise on every table

A config can force `sharding_type: table_row_wise` on every table (with UVM caching where a table
then needs it, found as above). Each table's reduce-scatter then stays inside its host and only
S rows per peer cross the network, but the host's buffers and NVLink traffic still grow with
W / 8:

{plans_table(work, cluster, plans)}"""


def findings_section(work: Workload, reports: list[ClusterReport]) -> str:
    """What the numbers say, in a few computed sentences."""
    planned = [(r, r.costs) for r in reports if r.costs is not None]
    lines = []
    uvm = [
        f"{r.world_size} GPUs ({', '.join(cached)})"
        for r, _ in planned
        if (cached := r.outcome.cached_tables)
    ]
    lines.append(
        "UVM caching is needed on " + (", ".join(uvm) if uvm else "none of these clusters") + "."
    )
    rate = {r.world_size: edges_per_second(work, r.world_size, costs) for r, costs in planned}
    best = max(rate, key=lambda world_size: rate[world_size])
    largest, largest_costs = planned[-1]
    step, output = largest_costs.step, largest_costs.output
    fewer = (output.intra + output.inter) / (
        largest.sequence_output.intra + largest.sequence_output.inter
    )
    lines.append(
        f"The planned throughput peaks at {best} GPUs ({rate[best] / 1e6:,.1f} M positive"
        f" edges/s); on {largest.world_size} GPUs it is {rate[largest.world_size] / 1e6:,.1f} M,"
        f" and the pooled output's collectives take {step.output_dist / step.seconds:.0%} of"
        " the step. The lookup layout, not the GPUs, bounds scaling: on"
        f" {largest.world_size} GPUs unpooled lookups would move {fewer:,.0f} times fewer"
        ' output bytes ("The pooled lookup layout").'
    )
    forced = largest.table_row_wise_costs
    if forced is not None:
        forced_rate = edges_per_second(work, largest.world_size, forced)
        lines.append(
            f"On {largest.world_size} GPUs, forcing `table_row_wise` on every table gives"
            f" {forced_rate / 1e6:,.1f} M positive edges/s instead of"
            f" {rate[largest.world_size] / 1e6:,.1f} M, with a config change alone."
        )
    rankings = [r.ranking for r, _ in planned if r.ranking is not None]
    times = [cost.seconds for cost in rankings]
    gemms = [cost.gemm_s for cost in rankings]
    blocks = max(cost.blocks_s / cost.seconds for cost in rankings)
    lines.append(
        f"Sharded ranking of {work.eval_queries:,} edges takes {duration(min(times))} to"
        f" {duration(max(times))} on these plans, up to {blocks:.0%} of it the fixed cost of"
        f" score blocks sized for a CPU ({size(ranking_memory(work)['score block'])}); with"
        " blocks sized for the GPU the GEMMs alone"
        f" would take {duration(min(gemms))} to {duration(max(gemms))}. Table-row-wise tables"
        " put a table's whole ranking on one host; during training, rank a few batches of"
        ' edges ("What to configure").'
    )
    return "## Findings\n\n" + "\n".join(f"- {line}" for line in lines)
