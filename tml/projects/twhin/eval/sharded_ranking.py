"""Filtered ranking over tables that no process holds whole (the definitions: ranking.py).

Every rank runs the same steps on the same edges, in groups of up to `GROUP_EDGES` edges of one
relation (a group's two sides, tail and head, are ranked together):

1. the group's query and true-entity rows are looked up (`RowSource.lookup`: each rank fills
   the rows it holds, one all-reduce), and every rank builds the same queries and true scores;
2. each rank scores the queries against the rows it holds, a bounded block at a time, leaving
   out the true entity and the known answers that fall in the block, and counts #better and
   #tied per query (and the sampled AUC's wins over the drawn rows that fall there);
3. one all-reduce sums the counts: ranks and AUC follow as if one process had scored them all.

Memory per rank: its shards, one block of scores (ranking.SCORES_PER_BLOCK) and the group's
queries; time falls with more ranks. Several groups share one pass over the rows when the
source says rows are costly to read (a checkpoint on disk). The AUC's draws come from one
generator seeded with `seed`, group after group, tail side then head side: the same on every
rank and for any sharding, and the same as one process scoring whole tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tml.projects.twhin.eval.ranking import (
    SCORES_PER_BLOCK,
    KnownEdges,
    RankedSide,
    RankingAccumulator,
    paired_scores,
)
from tml.projects.twhin.eval.row_sources import RowSource, TensorRows
from tml.projects.twhin.models.scorer import EdgeScorer

log = logging.getLogger(__name__)

GROUP_EDGES = 1 << 12
"""Edges of one relation ranked together: their queries meet every row block in one product."""
BLOCK_ROWS = 1 << 16
"""Rows read from a source at a time (each side then scores them a score block at a time)."""


@dataclass(frozen=True)
class EdgeGroup:
    """Up to GROUP_EDGES edges of one relation, in the order they were given."""

    relation: int
    lhs: np.ndarray
    rhs: np.ndarray


def edge_groups(edges: np.ndarray, num_relations: int) -> list[EdgeGroup]:
    """Relation by relation, then in edge order."""
    groups = []
    for relation in range(num_relations):
        mine = edges[edges[:, 1] == relation]
        for start in range(0, len(mine), GROUP_EDGES):
            part = mine[start : start + GROUP_EDGES]
            groups.append(EdgeGroup(relation, np.ascontiguousarray(part[:, 0]),
                                    np.ascontiguousarray(part[:, 2])))  # fmt: skip
    return groups


class _LookedUp:
    """Full rows of the ids a pass needs, one lookup (a collective) per table."""

    def __init__(self, source: RowSource, wanted: dict[str, list[np.ndarray]]) -> None:
        self._ids: dict[str, torch.Tensor] = {}
        self._rows: dict[str, torch.Tensor] = {}
        for table in source.shapes:  # the same order on every rank
            if table in wanted:
                ids = torch.from_numpy(np.unique(np.concatenate(wanted[table])))
                self._ids[table] = ids.to(source.device)
                self._rows[table] = source.lookup(table, ids)

    def rows(self, table: str, ids: np.ndarray) -> torch.Tensor:
        wanted = torch.from_numpy(ids).to(self._ids[table].device)
        return self._rows[table][torch.searchsorted(self._ids[table], wanted)]


class SidesBuilder:
    """Turns edge groups into their two ranked sides: queries, true scores, what is left out
    (the true entity, and known answers when filtered) and the AUC's draws."""

    def __init__(self, scorer: EdgeScorer, relations: Sequence[tuple[str, str]],
                 shapes: dict[str, tuple[int, int]], known: KnownEdges | None,
                 auc_negatives: int, seed: int) -> None:  # fmt: skip
        self.scorer, self.relations, self.shapes = scorer, relations, shapes
        self.known, self.auc_negatives = known, auc_negatives
        self.generator = torch.Generator().manual_seed(seed)

    def wanted_rows(self, groups: Sequence[EdgeGroup]) -> dict[str, list[np.ndarray]]:
        wanted: dict[str, list[np.ndarray]] = {}
        for group in groups:
            lhs_table, rhs_table = self.relations[group.relation]
            wanted.setdefault(lhs_table, []).append(group.lhs)
            wanted.setdefault(rhs_table, []).append(group.rhs)
        return wanted

    def sides(self, group: EdgeGroup, looked_up: _LookedUp) -> tuple[RankedSide, RankedSide]:
        relation, comparator = group.relation, self.scorer.comparator
        lhs_table, rhs_table = self.relations[relation]
        lhs = looked_up.rows(lhs_table, group.lhs)
        rhs = looked_up.rows(rhs_table, group.rhs)
        operator, reverse = self.scorer.operator(relation), self.scorer.reverse_operator(relation)
        # Tails: op(e_l) against every rhs entity.
        tail_queries = operator(lhs)
        tail = RankedSide(rhs_table, tail_queries, paired_scores(comparator, tail_queries, rhs),
                          self._excluded(relation, group.lhs, group.rhs, tails=True),
                          self._draws(rhs_table, len(group.lhs)))  # fmt: skip
        # Heads: e_t against op(every lhs entity) (comparators are symmetric), or rev(e_t)
        # against every lhs entity with reciprocal relations.
        excluded = self._excluded(relation, group.rhs, group.lhs, tails=False)
        draws = self._draws(lhs_table, len(group.lhs))
        if reverse is None:
            head = RankedSide(lhs_table, rhs, paired_scores(comparator, rhs, tail_queries),
                              excluded, draws, candidate_operator=operator)  # fmt: skip
        else:
            head_queries = reverse(rhs)
            head = RankedSide(lhs_table, head_queries,
                              paired_scores(comparator, head_queries, lhs), excluded, draws)  # fmt: skip
        return tail, head

    def _excluded(self, relation: int, keys: np.ndarray, answers: np.ndarray,
                  tails: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(query, row) pairs left out: each query's true answer, and its known answers."""
        query, rows = np.arange(len(keys)), answers
        if self.known is not None:
            known = (self.known.tails if tails else self.known.heads)(relation, keys)
            query, rows = np.concatenate([query, known[0]]), np.concatenate([rows, known[1]])
        return query, rows

    def _draws(self, table: str, count: int) -> np.ndarray:
        rows = self.shapes[table][0]
        return torch.randint(rows, (count, self.auc_negatives), generator=self.generator).numpy()


def _sweep(source: RowSource, sides: list[RankedSide], scorer: EdgeScorer) -> None:
    """One pass over the rows this rank counts, table by table (the same order on every rank)."""
    for table in source.shapes:
        mine = [side for side in sides if side.table == table]
        if not mine:
            continue
        widest = max(len(side.queries) for side in mine)
        rows_per_block = max(BLOCK_ROWS, SCORES_PER_BLOCK // max(widest, 1))
        for first_row, rows in source.row_blocks(table, rows_per_block):
            for side in mine:
                side.count_block(first_row, rows, scorer.comparator)


def _passes(groups: list[EdgeGroup], queries_per_pass: int) -> Iterator[list[EdgeGroup]]:
    """Consecutive groups, as many per pass as fit `queries_per_pass` edges (at least one)."""
    current: list[EdgeGroup] = []
    size = 0
    for group in groups:
        if current and size + len(group.lhs) > queries_per_pass:
            yield current
            current, size = [], 0
        current.append(group)
        size += len(group.lhs)
    if current:
        yield current


@torch.no_grad()
def rank_edges(
    source: RowSource,
    scorer: EdgeScorer,
    relations: Sequence[tuple[str, str]],
    edges: np.ndarray,
    known: KnownEdges | None,
    *,
    auc_negatives: int = 100,
    timeout_s: float = float("inf"),
    seed: int = 0,
) -> dict[str, float]:
    """Filtered ranking metrics over `edges` (lhs, rel, rhs), both sides pooled; a collective
    every rank calls with the same edges. `relations[r]` is relation r's (lhs, rhs) tables.

    `known` None ranks unfiltered. Stops between passes (every rank at the same one) once
    `timeout_s` has passed, and says how many edges it ranked.
    """
    started = time.perf_counter()
    build = SidesBuilder(scorer, relations, source.shapes, known, auc_negatives, seed)
    totals, evaluated = RankingAccumulator(), 0
    for groups in _passes(edge_groups(edges, len(relations)), source.sweep_queries):
        if source.agree(time.perf_counter() - started > timeout_s):
            break
        looked_up = _LookedUp(source, build.wanted_rows(groups))
        sides = [side for group in groups for side in build.sides(group, looked_up)]
        _sweep(source, sides, scorer)
        counts = torch.cat([side.counts for side in sides], dim=1)
        source.all_reduce(counts)
        for part in counts.split([len(side.queries) for side in sides], dim=1):
            totals.add(*RankedSide.results(part))
        evaluated += sum(len(group.lhs) for group in groups)
        elapsed = time.perf_counter() - started
        log.info("ranked %d of %d edges (%.0f edges/s, both sides, every entity)", evaluated,
                 len(edges), evaluated / max(elapsed, 1e-9))  # fmt: skip
    return {
        **totals.metrics(),
        "edges": evaluated,
        "filtered": known is not None,
        "seconds": time.perf_counter() - started,
    }


def evaluate_ranking(
    scorer: EdgeScorer,
    tables: dict[str, torch.Tensor],
    edges: np.ndarray,
    known: KnownEdges | None,
    *,
    auc_negatives: int = 100,
    timeout_s: float = float("inf"),
    seed: int = 0,
) -> dict[str, float]:
    """`rank_edges` on whole tables held by this one process (small tables, tests)."""
    source = TensorRows({name: rows.float() for name, rows in tables.items()})
    return rank_edges(source, scorer, scorer.relations, edges, known,
                      auc_negatives=auc_negatives, timeout_s=timeout_s, seed=seed)  # fmt: skip
