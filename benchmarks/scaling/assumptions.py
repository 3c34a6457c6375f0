"""The assumptions behind docs/scaling.md: the H100 cluster, the TwHIN-size graph and its batch.

Every field is printed in the doc. The batch settings are `configs/bench.yaml`'s; the lookup
layout is the trainer's own (`SlotLayout`, tml/projects/twhin/batch/layout.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tml.projects.twhin.batch.layout import GraphShape, SlotLayout, chunk_groups

FP32 = 4  # bytes: weights, pooled rows, gradients, scores
ID_BYTES = 8  # int64 ids (the batch builder's dtype)
LENGTH_BYTES = 4  # int32 bag lengths

# The measured H100 scorer figures (docs/scaling.md, "GPU"; benchmarks/scorer_device.py): positive
# edges/s of the scoring step (forward + backward, 50 + 50 negatives, dim 64, lookups excluded).
H100_SCORER_POINTS = ((100_000, 13e6), (1_000_000, 72e6))
H100_SCORER_DIM = 64


@dataclass(frozen=True)
class Cluster:
    """H100 SXM hosts (HGX/DGX H100). Bandwidths are per GPU and direction, after efficiency."""

    gpus_per_host: int = 8
    hbm_bytes: int = 80 * 10**9
    host_bytes_per_gpu: int = 256 * 10**9  # 2 TB of host memory per 8 GPUs
    intra_host_bw: float = 360e9  # NVLink 4 via NVSwitch: 450 GB/s per direction, at 80 %
    inter_host_bw: float = 40e9  # one 400 Gb/s NDR NIC per GPU: 50 GB/s, at 80 %
    hbm_bw: float = 3.35e12  # HBM3 peak
    gather_efficiency: float = 0.5  # share of hbm_bw reached by 512-byte row gathers/scatters
    pcie_bw: float = 55e9  # host <-> GPU (UVM): PCIe Gen5 x16, 64 GB/s, at ~85 %
    eval_flops: float = 40e12  # FP32 GEMM: 60 % of the H100 SXM's 67 TFLOPS (no TF32)
    # Fixed cost of one score block of the ranking (eval/ranking.py's RankedSide._count): some 20
    # small kernels and two host syncs (searchsorted(...).tolist()). Assumed, not measured.
    score_block_overhead_s: float = 100e-6
    planner_reserve: float = 0.15  # share of HBM TorchRec's planner keeps back (its default)

    def hosts(self, world_size: int) -> int:
        return max(1, world_size // self.gpus_per_host)


@dataclass(frozen=True)
class TableSpec:
    name: str
    rows: int
    dim: int


@dataclass(frozen=True)
class RelationSpec:
    name: str
    lhs: str
    rhs: str
    share: float  # of the edges (and of each batch's positives)


@dataclass(frozen=True)
class Workload:
    """The graph and the batch settings; defaults: `configs/bench.yaml` at TwHIN scale."""

    tables: tuple[TableSpec, ...] = (
        TableSpec("user", 10**8, 128),
        TableSpec("tweet", 10**9, 128),
        TableSpec("advertiser", 10**6, 128),
    )
    relations: tuple[RelationSpec, ...] = (
        RelationSpec("follows", "user", "user", 0.30),
        RelationSpec("fav", "user", "tweet", 0.50),
        RelationSpec("retweet", "user", "tweet", 0.15),
        RelationSpec("click", "user", "advertiser", 0.05),
    )
    edges: int = 10**9
    batch_size: int = 10_000  # per rank (bench.yaml's per_replica_batch_size)
    in_batch_negatives: int = 50
    global_negatives: int = 50
    global_negatives_per_chunk: bool = True
    eval_queries: int = 10**6  # ranked edges: 0.1 % of the edges, as the bench holds out
    uvm_miss_rate: float = 0.1  # lookups of a UVM-cached table that miss its HBM cache

    def table(self, name: str) -> TableSpec:
        return next(table for table in self.tables if table.name == name)

    @property
    def dim(self) -> int:
        return self.tables[0].dim

    @property
    def layout(self) -> SlotLayout:
        names = [table.name for table in self.tables]
        graph = GraphShape(  # one scoring group per table pair: every relation is a translation
            table_names=tuple(names),
            table_sizes=tuple(table.rows for table in self.tables),
            relation_tables=tuple((names.index(r.lhs), names.index(r.rhs)) for r in self.relations),
        )
        return SlotLayout(
            graph,
            batch_size=self.batch_size,
            global_negatives=self.global_negatives,
            in_batch_negatives=self.in_batch_negatives,
            global_negatives_per_chunk=self.global_negatives_per_chunk,
        )

    @property
    def slots(self) -> int:
        """S: lookups per rank per step, the stride of every table's feature."""
        return self.layout.num_slots

    def positives_per_relation(self) -> list[int]:
        counts = [int(self.batch_size * relation.share) for relation in self.relations]
        counts[0] += self.batch_size - sum(counts)
        return counts

    def lookups_per_table(self) -> dict[str, int]:
        """Non-empty slots of each table per rank and step (the ids actually looked up).

        Positives look up their lhs and rhs; each negative owner (a chunk, or a table) draws G ids
        from its lhs and G from its rhs table; unused owner slots look up row 0 of the first table.
        """
        counts = self.positives_per_relation()
        lookups = dict.fromkeys((table.name for table in self.tables), 0)
        for relation, count in zip(self.relations, counts, strict=True):
            owned = sum(
                rows // width for rows, width in chunk_groups(count, self.in_batch_negatives)
            )
            owned = owned if self.global_negatives_per_chunk else 0
            for side in (relation.lhs, relation.rhs):
                lookups[side] += count + owned * self.global_negatives
        if not self.global_negatives_per_chunk:  # G negatives from each lhs and each rhs table
            for name in [*{r.lhs for r in self.relations}, *{r.rhs for r in self.relations}]:
                lookups[name] += self.global_negatives
        lookups[self.tables[0].name] += self.slots - sum(lookups.values())  # unused owners
        return lookups

    def steps_per_epoch(self, world_size: int) -> int:
        return math.ceil(self.edges / (self.batch_size * world_size))
