"""Filtered ranking evaluation (MRR, Hits@k, mean rank) plus TwHIN's sampled AUC: the definitions.

For each evaluated edge (l, r, t) the true tail t is ranked among every entity of r's rhs table,
and the true head l among every entity of r's lhs table. "Filtered": other entities known to form
a true edge with the query (in train, validation or test) are left out of the ranking, so a model
is not punished for ranking another correct answer first. Ties count half (the realistic rank:
1 + #better + #tied/2). The AUC is the share of uniformly drawn entities (not the true one, not
filtered) that score below the true entity, ties half.

A rank only needs two counts per query, #better and #tied, and they add up over any split of the
candidates: `RankedSide` counts them over one block of candidate rows at a time, so the rows can
lie on many ranks (sharded_ranking.py sums the counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tml.projects.twhin.models.comparators import Comparator

SCORES_PER_BLOCK = 1 << 22  # floats of one (queries x candidates) score block: 16 MiB
HITS_AT = (1, 3, 10)
_COUNTS = 4  # per query: better, tied, AUC wins (ties half), valid AUC draws


class KnownEdges:
    """Every true edge, indexed for "which tails does (rel, lhs) have" and the reverse."""

    def __init__(self, edges: np.ndarray) -> None:
        self._by_head = _SortedPairs(edges[:, 1], edges[:, 0], edges[:, 2])
        self._by_tail = _SortedPairs(edges[:, 1], edges[:, 2], edges[:, 0])

    def tails(self, relation: int, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, known tail) pairs for queries (relation, heads[i])."""
        return self._by_head.lookup(relation, heads)

    def heads(self, relation: int, tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, known head) pairs for queries (relation, tails[i])."""
        return self._by_tail.lookup(relation, tails)


class _SortedPairs:
    """(relation, key) -> values, as one sorted array searched with numpy (no Python dicts)."""

    def __init__(self, relation: np.ndarray, key: np.ndarray, value: np.ndarray) -> None:
        self._span = int(key.max(initial=0)) + 1
        combined = relation.astype(np.int64) * self._span + key
        order = np.lexsort((value, combined))
        self._keys = combined[order]
        self._values = value[order]

    def lookup(self, relation: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        combined = relation * self._span + keys.astype(np.int64)
        combined[keys >= self._span] = -1  # ids never seen as keys have no known edges
        start = np.searchsorted(self._keys, combined, side="left")
        stop = np.searchsorted(self._keys, combined, side="right")
        counts = stop - start
        query = np.repeat(np.arange(len(keys)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return query, self._values[np.repeat(start, counts) + offsets]


@dataclass
class RankingAccumulator:
    """Running sums of the per-side ranks and sampled-AUC wins."""

    reciprocal: float = 0.0
    rank: float = 0.0
    hits: tuple[float, ...] = (0.0,) * len(HITS_AT)
    auc: float = 0.0
    count: int = 0

    def add(self, ranks: torch.Tensor, auc: torch.Tensor) -> None:
        self.reciprocal += float((1.0 / ranks).sum())
        self.rank += float(ranks.sum())
        self.hits = tuple(
            h + float((ranks <= k).sum()) for h, k in zip(self.hits, HITS_AT, strict=True)
        )
        self.auc += float(auc.sum())
        self.count += len(ranks)

    def metrics(self) -> dict[str, float]:
        n = max(self.count, 1)
        result = {"mrr": self.reciprocal / n, "mean_rank": self.rank / n}
        result.update({f"hits@{k}": h / n for k, h in zip(HITS_AT, self.hits, strict=True)})
        result["auc"] = self.auc / n
        return result


def _count_true(flags: torch.Tensor) -> torch.Tensor:
    """Row counts of a bool block: summed as bytes into int32, as a plain bool sum (or
    count_nonzero) first widens the whole block to int64, which made ranking 2-3x slower."""
    return flags.view(torch.uint8).sum(1, dtype=torch.int32)


def auc_per_row(
    positive: torch.Tensor, negative: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Per row: the share of valid negatives scoring below the positive, ties counting half.

    `positive` broadcasts against `negative` (n, m), e.g. (n, 1).
    """
    wins = (positive > negative).float() + 0.5 * (positive == negative).float()
    valid = valid.float()
    return (wins * valid).sum(1) / valid.sum(1).clamp(min=1)


def paired_scores(comparator: Comparator, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(n,) scores of aligned rows, by the same formula as `all_pairs` (e.g. l2's expansion)."""
    return comparator.all_pairs(lhs.unsqueeze(-2), rhs.unsqueeze(-2))[..., 0, 0]


class _ByRow:
    """(query, candidate row) pairs sorted by row, so the pairs inside a block are one slice."""

    def __init__(self, query: np.ndarray, row: np.ndarray, device: torch.device) -> None:
        order = np.argsort(row, kind="stable")
        self.rows = torch.from_numpy(np.ascontiguousarray(row[order], dtype=np.int64)).to(device)
        self.query = torch.from_numpy(np.ascontiguousarray(query[order], dtype=np.int64)).to(device)

    def inside(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, row - start) of the pairs whose row is in [start, stop)."""
        bounds = torch.tensor([start, stop], device=self.rows.device)
        low, high = torch.searchsorted(self.rows, bounds).tolist()
        return self.query[low:high], self.rows[low:high] - start


class RankedSide:
    """One direction of a group of edges: queries ranked against every row of `table`.

    `queries` (q, d) are the transformed query vectors, `true_scores` (q,) their scores with
    the true entity. Candidates come in blocks of rows (`count_block`), in any order and on any
    rank; `counts` (4, q) holds #better, #tied, AUC wins and valid AUC draws, to be summed.
    """

    def __init__(
        self,
        table: str,
        queries: torch.Tensor,
        true_scores: torch.Tensor,
        excluded: tuple[np.ndarray, np.ndarray],
        draws: np.ndarray,
        candidate_operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """`excluded`: (query, row) pairs left out of the ranking (the true entity and, when
        filtered, other known answers); `draws` (q, m): rows drawn for the AUC."""
        device = queries.device
        self.table, self.queries, self.true_scores = table, queries, true_scores
        self.candidate_operator = candidate_operator
        self.excluded = _ByRow(*excluded, device)
        per_query = np.repeat(np.arange(len(draws)), draws.shape[1])
        self.draws = _ByRow(per_query, draws.reshape(-1), device)
        self.counts = torch.zeros(_COUNTS, len(queries), dtype=torch.float64, device=device)

    def count_block(self, first_row: int, rows: torch.Tensor, comparator: Comparator) -> None:
        """Count candidates rows [first_row, first_row + len(rows)), a bounded block at a time."""
        step = max(1, SCORES_PER_BLOCK // max(len(self.queries), 1))
        for offset in range(0, len(rows), step):
            block = rows[offset : offset + step]
            if self.candidate_operator is not None:
                block = self.candidate_operator(block)
            self._count(first_row + offset, comparator.all_pairs(self.queries, block))

    def _count(self, start: int, scores: torch.Tensor) -> None:
        stop = start + scores.shape[1]
        query, column = self.excluded.inside(start, stop)
        scores[query, column] = float("-inf")
        true = self.true_scores.unsqueeze(1)
        self.counts[0] += _count_true(scores > true)
        self.counts[1] += _count_true(scores == true)
        query, column = self.draws.inside(start, stop)
        drawn, positive = scores[query, column], self.true_scores[query]
        valid = (drawn > float("-inf")).double()
        wins = (positive > drawn).double() + 0.5 * (positive == drawn).double()
        self.counts[2].index_add_(0, query, wins * valid)
        self.counts[3].index_add_(0, query, valid)

    @staticmethod
    def results(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(realistic ranks, per-query AUC) from summed counts."""
        ranks = 1.0 + counts[0] + 0.5 * counts[1]
        return ranks, counts[2] / counts[3].clamp(min=1)
