"""The best k candidates of each query, over candidate rows that arrive in blocks: the exact
nearest-neighbour search. Memory stays at one block of scores plus the best k."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from tml.projects.twhin.models.comparators import Comparator


@torch.no_grad()
def top_k(
    queries: torch.Tensor,
    blocks: Iterable[tuple[int, torch.Tensor]],
    comparator: Comparator,
    k: int,
    operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, rows), each (q, k) best first: the k best rows for each query.

    `blocks`: (first row, rows) covering the candidates, e.g. a table's row windows. With
    `operator`, the candidates are heads: they are transformed before comparing. `exclude` (q,)
    is a row per query to leave out (e.g. the query itself).
    """
    best_scores = torch.empty(len(queries), 0)
    best_rows = torch.empty(len(queries), 0, dtype=torch.long)
    for start, block in blocks:
        if operator is not None:
            block = operator(block)
        scores = comparator.all_pairs(queries, block)
        rows = torch.arange(start, start + scores.shape[1]).expand(len(queries), -1)
        if exclude is not None:
            scores = scores.masked_fill(rows == exclude.unsqueeze(1), float("-inf"))
        scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows], 1)
        best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
        best_rows = rows.gather(1, picked)
    return best_scores, best_rows
