"""What sharded filtered ranking (tml/projects/twhin/eval/sharded_ranking.py) costs on a plan.

The implementation's own constants set the shape of the work: edges of one relation go in groups
of GROUP_EDGES, one pass over every rank's rows per group (`RowSource.sweep_queries` edges a pass,
for rows a sharded model holds); each side of a group meets the rank's rows of its table in score
blocks of SCORES_PER_BLOCK scores, i.e. SCORES_PER_BLOCK / GROUP_EDGES rows at a time. A rank's
time is its GEMM FLOPs, a fixed cost per score block, and the UVM rows it reads over PCIe (every
side of every pass reads its table's rows again: they stay in host memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.scaling.assumptions import FP32, Cluster, Workload
from benchmarks.scaling.costs import Placement
from tml.projects.twhin.eval.ranking import SCORES_PER_BLOCK
from tml.projects.twhin.eval.row_sources import ShardedRows
from tml.projects.twhin.eval.sharded_ranking import BLOCK_ROWS, GROUP_EDGES

SCORE_BLOCK_ROWS = SCORES_PER_BLOCK // GROUP_EDGES  # candidate rows per score block, full group


@dataclass(frozen=True)
class RankingCost:
    """Sharded filtered ranking of `eval_queries` edges (both sides), on the busiest rank."""

    flops: float
    score_blocks: int
    host_reads: float  # UVM rows read over PCIe
    gemm_s: float
    blocks_s: float  # the score blocks' fixed cost
    pcie_s: float

    @property
    def seconds(self) -> float:
        return self.gemm_s + self.blocks_s + self.pcie_s


def passes_per_relation(work: Workload) -> list[int]:
    """Passes over the rows for each relation's share of the ranked edges (one per group)."""
    if ShardedRows.sweep_queries != GROUP_EDGES:
        raise RuntimeError("ranking.py assumes one group per pass; update it to _passes' rule")
    return [math.ceil(work.eval_queries * r.share / GROUP_EDGES) for r in work.relations]


def ranking_cost(placement: Placement, work: Workload, cluster: Cluster) -> RankingCost:
    """Each rank scores every query against the rows it holds: 2 x Q x rows x d FLOPs per side
    (tail queries meet the relation's rhs table, head queries its lhs table)."""
    by_table = {table.table: table for table in placement.tables}
    totals = {rank: [0.0, 0, 0.0] for rank in placement.holders}  # flops, blocks, host bytes
    for relation, passes in zip(work.relations, passes_per_relation(work), strict=True):
        queries = work.eval_queries * relation.share
        for side in (relation.rhs, relation.lhs):
            table, dim = by_table[side], work.table(side).dim
            for rank in table.ranks:
                rows = table.rows_on(rank)
                totals[rank][0] += 2 * queries * rows * dim
                totals[rank][1] += passes * _score_blocks(rows)
                if table.cached:
                    totals[rank][2] += passes * rows * dim * FP32
    costs = [
        RankingCost(flops, int(blocks), host, flops / cluster.eval_flops,
                    blocks * cluster.score_block_overhead_s, host / cluster.pcie_bw)
        for flops, blocks, host in totals.values()
    ]  # fmt: skip
    return max(costs, key=lambda cost: cost.seconds)


def _score_blocks(rows: int) -> int:
    """Score blocks of one side over `rows` rows: row blocks of BLOCK_ROWS, each cut in steps."""
    full, rest = divmod(rows, BLOCK_ROWS)
    per_block = math.ceil(BLOCK_ROWS / SCORE_BLOCK_ROWS)
    return full * per_block + math.ceil(rest / SCORE_BLOCK_ROWS)


def ranking_memory(work: Workload) -> dict[str, float]:
    """Bytes a rank holds beyond its shards while ranking (one pass at a time)."""
    return {
        "score block": SCORES_PER_BLOCK * FP32,
        "queries and true rows of a pass": GROUP_EDGES * 2 * 2 * work.dim * FP32,
        "counts of a pass": GROUP_EDGES * 2 * 4 * 8,  # 4 float64 counts per query and side
    }
