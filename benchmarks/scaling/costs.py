"""What a TorchRec sharding plan costs at TwHIN scale: memory, bytes moved and step time.

Pure arithmetic over a plan (which rank holds which rows of which table) and the assumptions of
assumptions.py; planner.py gets the plans from TorchRec's planner and doc.py writes them into
docs/scaling.md (the ranking's cost is ranking.py's).

The lookup layout is the trainer's (`SlotLayout`, tml/projects/twhin/batch/layout.py): each rank
looks up S slots per step, and every table's feature has S bags (size 1 in the slot's own table,
empty in the others), so a pooled table returns S rows per rank whether or not the slots are its
own. A row-wise or table-row-wise shard therefore computes W x S pooled rows (every rank's
slots) and reduce-scatters them; tests/distributed/test_scaling_doc.py checks that shape on
real TorchRec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.scaling.assumptions import (
    FP32,
    H100_SCORER_DIM,
    H100_SCORER_POINTS,
    ID_BYTES,
    LENGTH_BYTES,
    Cluster,
    Workload,
)


@dataclass(frozen=True)
class Shard:
    """A block of a table's rows on one rank, with the planner's estimates for it."""

    rank: int
    rows: int
    planner_hbm: int
    planner_ddr: int
    planner_kernel_ms: float  # TorchRec's perf model: fwd + bwd compute (+ prefetch)
    planner_comms_ms: float  # TorchRec's perf model: input dist + fwd + bwd comms


@dataclass(frozen=True)
class TablePlan:
    """One table's place in a plan: sharding type, compute kernel, cache and shards."""

    table: str
    sharding_type: str
    compute_kernel: str
    cache_load_factor: float | None
    shards: tuple[Shard, ...]

    @property
    def ranks(self) -> list[int]:
        return sorted({shard.rank for shard in self.shards})

    @property
    def cached(self) -> bool:
        return self.compute_kernel == "fused_uvm_caching"

    def rows_on(self, rank: int) -> int:
        return sum(shard.rows for shard in self.shards if shard.rank == rank)


@dataclass(frozen=True)
class Placement:
    """Where every table's rows live on a cluster of `world_size` GPUs."""

    world_size: int
    tables: tuple[TablePlan, ...]

    @property
    def holders(self) -> list[int]:
        return sorted({rank for table in self.tables for rank in table.ranks})

    @classmethod
    def row_wise_everywhere(cls, work: Workload, world_size: int) -> Placement:
        """Every table cut into equal row blocks over all GPUs (no planner estimates)."""
        tables = []
        for table in work.tables:
            rows = -(-table.rows // world_size)
            shards = tuple(
                Shard(rank, min(rows, table.rows - rank * rows), 0, 0, 0.0, 0.0)
                for rank in range(world_size)
            )
            tables.append(TablePlan(table.name, "row_wise", "fused", None, shards))
        return cls(world_size, tuple(tables))


@dataclass(frozen=True)
class Memory:
    """One GPU's memory by our arithmetic, beside the planner's estimate (bytes)."""

    weights: int  # table rows in HBM (all of them, or the UVM cache)
    optimizer: int  # row-wise Adagrad: one fp32 per row, in HBM even for UVM tables (fbgemm)
    cache_state: int  # UVM cache bookkeeping (TorchRec's estimate: rows x (4 + 16 x clf))
    lookup_io: int  # received ids and lengths, the pooled output (or its gradient)
    host: int  # UVM table rows in host memory
    planner_hbm: int
    planner_ddr: int

    @property
    def hbm(self) -> int:
        return self.weights + self.optimizer + self.cache_state + self.lookup_io


def pooled_output_rows(sharding_type: str, world_size: int, slots: int) -> int:
    """Rows of pooled output a holder of a pooled table computes per step (before its output
    collective): every rank's S slots for table-wise, row-wise and table-row-wise shards."""
    if sharding_type in ("table_wise", "row_wise", "table_row_wise"):
        return world_size * slots
    raise ValueError(f"no cost model for sharding type {sharding_type}")


def memory(placement: Placement, work: Workload, rank: int) -> Memory:
    """HBM and host memory of `rank` for the tables it holds."""
    world = placement.world_size
    lookups = work.lookups_per_table()
    parts = dict.fromkeys(("weights", "optimizer", "cache_state", "lookup_io", "host"), 0)
    planner_hbm = planner_ddr = 0
    for table in placement.tables:
        rows = table.rows_on(rank)
        if not rows:
            continue
        dim = work.table(table.table).dim
        table_bytes = rows * dim * FP32
        holders = len(table.ranks)
        received_ids = lookups[table.table] * world // holders
        out_rows = pooled_output_rows(table.sharding_type, world, work.slots)
        parts["optimizer"] += rows * FP32
        # The pooled output is freed once reduce-scattered (TBE's backward does not keep it) and
        # its gradient, all-gathered in backward, has the same size: one of them at a time.
        parts["lookup_io"] += (
            received_ids * ID_BYTES + world * work.slots * LENGTH_BYTES + out_rows * dim * FP32
        )
        if table.cached:
            load_factor = table.cache_load_factor or 0.2
            parts["weights"] += round(table_bytes * load_factor)
            parts["cache_state"] += math.ceil(rows * (4 + 16 * load_factor))
            parts["host"] += table_bytes
        else:
            parts["weights"] += table_bytes
        planner_hbm += sum(s.planner_hbm for s in table.shards if s.rank == rank)
        planner_ddr += sum(s.planner_ddr for s in table.shards if s.rank == rank)
    return Memory(**parts, planner_hbm=planner_hbm, planner_ddr=planner_ddr)


def fullest_rank(placement: Placement, work: Workload) -> int:
    """The rank with the most HBM in use (the lowest such rank)."""
    return max(placement.holders, key=lambda r: (memory(placement, work, r).hbm, -r))


@dataclass(frozen=True)
class Traffic:
    """Bytes one rank moves in one collective phase (the busiest rank), and the time it takes."""

    intra: float  # bytes over NVLink, the larger of sent and received
    inter: float  # bytes over the network, the larger of sent and received
    seconds: float


def _traffic(matrix: np.ndarray, cluster: Cluster) -> Traffic:
    """Busiest rank of a (source, destination) bytes matrix; a rank's intra- and inter-host
    parts are timed one after the other (conservative), each at the larger of send and receive."""
    host = np.arange(len(matrix)) // cluster.gpus_per_host
    same = host[:, None] == host[None, :]
    np.fill_diagonal(matrix, 0.0)
    intra = np.maximum((matrix * same).sum(1), (matrix * same).sum(0))
    inter = np.maximum((matrix * ~same).sum(1), (matrix * ~same).sum(0))
    seconds = intra / cluster.intra_host_bw + inter / cluster.inter_host_bw
    worst = int(np.argmax(seconds))
    return Traffic(float(intra[worst]), float(inter[worst]), float(seconds[worst]))


def _host_ranks(table: TablePlan, cluster: Cluster) -> tuple[int, np.ndarray]:
    first = table.ranks[0]
    host = first // cluster.gpus_per_host
    return host, np.arange(host * cluster.gpus_per_host, (host + 1) * cluster.gpus_per_host)


def input_dist(placement: Placement, work: Workload, cluster: Cluster) -> Traffic:
    """KJT all-to-all: every rank sends each holder of a table S lengths and its share of ids."""
    matrix = np.zeros((placement.world_size, placement.world_size))
    lookups = work.lookups_per_table()
    for table in placement.tables:
        holders = table.ranks
        per_holder = work.slots * LENGTH_BYTES + lookups[table.table] * ID_BYTES / len(holders)
        matrix[:, holders] += per_holder
    return _traffic(matrix, cluster)


def output_dist(placement: Placement, work: Workload, cluster: Cluster) -> Traffic:
    """Pooled rows back to the rank whose slots they are (forward; backward is its transpose).

    table_wise: all-to-all from the holder; row_wise: reduce-scatter over all ranks (each holder
    sends every other rank the partial sums of its S slots); table_row_wise: reduce-scatter in
    the holding host (each rank keeps the rows of one local index on every host), then an
    all-to-all to the ranks of that local index on the other hosts.
    """
    world = placement.world_size
    matrix = np.zeros((world, world))
    row_bytes = work.slots * work.dim * FP32
    local = cluster.gpus_per_host
    for table in placement.tables:
        if table.sharding_type == "table_wise":
            matrix[table.ranks[0], :] += row_bytes
        elif table.sharding_type == "row_wise":
            matrix[np.ix_(table.ranks, range(world))] += row_bytes
        elif table.sharding_type == "table_row_wise":
            host, members = _host_ranks(table, cluster)
            matrix[np.ix_(members, members)] += row_bytes * (world // local)
            for rank in members:
                peers = [r for r in range(rank % local, world, local) if r // local != host]
                matrix[rank, peers] += row_bytes
        else:
            raise ValueError(f"no cost model for sharding type {table.sharding_type}")
    return _traffic(matrix, cluster)


def sequence_output_dist(placement: Placement, work: Workload, cluster: Cluster) -> Traffic:
    """Unpooled (sequence) lookups: only the looked-up rows travel back to their rank."""
    matrix = np.zeros((placement.world_size, placement.world_size))
    lookups = work.lookups_per_table()
    for table in placement.tables:
        matrix[table.ranks, :] += lookups[table.table] * work.dim * FP32 / len(table.ranks)
    return _traffic(matrix, cluster)


def kernel_seconds(placement: Placement, work: Workload, cluster: Cluster, rank: int) -> float:
    """Lookup + fused row-wise Adagrad update on `rank`, from the HBM bytes it touches: writing
    the pooled output, reading its gradient, and reading, updating and writing each looked-up
    row and its Adagrad state; a UVM cache miss also fetches the row over PCIe and writes one
    back."""
    world = placement.world_size
    lookups = work.lookups_per_table()
    touched = over_pcie = 0.0
    for table in placement.tables:
        if not table.rows_on(rank):
            continue
        dim = work.table(table.table).dim
        out_rows = pooled_output_rows(table.sharding_type, world, work.slots)
        rows_read = lookups[table.table] * world / len(table.ranks)
        touched += 2 * out_rows * dim * FP32 + rows_read * (3 * dim * FP32 + 2 * FP32)
        if table.cached:
            over_pcie += 2 * rows_read * work.uvm_miss_rate * dim * FP32
    return touched / (cluster.hbm_bw * cluster.gather_efficiency) + over_pcie / cluster.pcie_bw


def scorer_line() -> tuple[float, float]:
    """(fixed seconds, seconds per positive at dim 64) of a scoring step on one H100: the line
    through the two measured points (docs/scaling.md, "GPU")."""
    (b1, rate1), (b2, rate2) = H100_SCORER_POINTS
    t1, t2 = b1 / rate1, b2 / rate2
    per_positive = (t2 - t1) / (b2 - b1)
    return t1 - per_positive * b1, per_positive


def scorer_seconds(work: Workload) -> float:
    """Scoring time per step, the per-positive part scaled by dim / 64 (the FLOPs grow with it)."""
    fixed, per_positive = scorer_line()
    return fixed + per_positive * work.batch_size * work.dim / H100_SCORER_DIM


@dataclass(frozen=True)
class StepTime:
    input_dist: float
    output_dist: float  # forward and backward
    kernel: float
    scorer: float

    @property
    def seconds(self) -> float:
        """TrainPipelineSparseDist overlaps the next batch's input dist with this step."""
        return max(self.input_dist, self.output_dist + self.kernel + self.scorer)


def step_time(placement: Placement, work: Workload, cluster: Cluster) -> StepTime:
    return StepTime(
        input_dist=input_dist(placement, work, cluster).seconds,
        output_dist=2 * output_dist(placement, work, cluster).seconds,
        kernel=max(kernel_seconds(placement, work, cluster, r) for r in placement.holders),
        scorer=scorer_seconds(work),
    )


@dataclass(frozen=True)
class Costs:
    """What one placement costs, for one workload."""

    rank: int  # the GPU with the most HBM in use
    memory: Memory
    input: Traffic
    output: Traffic
    step: StepTime
    planner_comms_ms: float  # TorchRec's perf model, busiest rank (input + fwd + bwd)

    @property
    def bytes_per_step(self) -> float:
        """All-to-all bytes of the busiest GPU: input, pooled output and its gradient."""
        return self.input.intra + self.input.inter + 2 * (self.output.intra + self.output.inter)


def placement_costs(placement: Placement, work: Workload, cluster: Cluster) -> Costs:
    """Memory of the fullest GPU, traffic and step time of the busiest."""
    rank = fullest_rank(placement, work)
    planner_comms = max(
        sum(s.planner_comms_ms for t in placement.tables for s in t.shards if s.rank == r)
        for r in placement.holders
    )
    return Costs(
        rank=rank,
        memory=memory(placement, work, rank),
        input=input_dist(placement, work, cluster),
        output=output_dist(placement, work, cluster),
        step=step_time(placement, work, cluster),
        planner_comms_ms=planner_comms,
    )
