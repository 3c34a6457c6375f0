"""Queries against every row of a table, in chunks: the scoring shared by ranking evaluation and
the exact nearest-neighbour search. Memory stays at one chunk of scores (plus the best k)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tml.projects.twhin.models.comparators import Comparator

TABLE_CHUNK_ROWS = 1 << 16


def score_chunks(
    queries: torch.Tensor,
    table: torch.Tensor,
    comparator: Comparator,
    operator: torch.nn.Module | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, (q, chunk) scores) of the queries against `table`, chunk by chunk.

    With `operator`, the candidates are heads: they are transformed before comparing.
    """
    for start in range(0, len(table), TABLE_CHUNK_ROWS):
        chunk = table[start : start + TABLE_CHUNK_ROWS]
        if operator is not None:
            chunk = operator(chunk)
        yield start, comparator.all_pairs(queries, chunk)


@torch.no_grad()
def top_k(
    queries: torch.Tensor,
    table: torch.Tensor,
    comparator: Comparator,
    k: int,
    operator: torch.nn.Module | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, rows), each (q, k) best first: the k best rows of `table` for each query.

    Exact and batched: memory stays at one chunk of scores plus the running best k.
    `exclude` (q,) is a row per query to leave out (e.g. the query itself).
    """
    best_scores = torch.empty(len(queries), 0)
    best_rows = torch.empty(len(queries), 0, dtype=torch.long)
    for start, scores in score_chunks(queries, table, comparator, operator):
        rows = torch.arange(start, start + scores.shape[1]).expand(len(queries), -1)
        if exclude is not None:
            scores = scores.masked_fill(rows == exclude.unsqueeze(1), float("-inf"))
        scores, rows = torch.cat([best_scores, scores], 1), torch.cat([best_rows, rows], 1)
        best_scores, picked = scores.topk(min(k, scores.shape[1]), dim=1)
        best_rows = rows.gather(1, picked)
    return best_scores, best_rows
