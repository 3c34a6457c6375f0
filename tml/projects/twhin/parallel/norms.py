"""Row-norm statistics of the sharded tables: a cheap health signal for a long run.

Norms that keep growing (too high a learning rate, too little regularisation) or collapse
towards zero show up here long before ranking metrics say why. Every rank reduces the shards it
holds; tables whose shards split the columns (column_wise) first sum each row's squares across
ranks, so they cost one all-reduce of a row-length vector.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.parallel.tables import local_shards, splits_columns, table_weights

BLOCK_ROWS = 65_536  # rows converted to fp32 at a time, so fp16 shards are never copied whole


def _row_squares(shard: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [
            shard[start : start + BLOCK_ROWS].float().pow(2).sum(1)
            for start in range(0, len(shard), BLOCK_ROWS)
        ]
        or [torch.zeros(0, device=shard.device)]
    )


@torch.no_grad()
def table_norm_stats(
    model: torch.nn.Module, config: TwhinModelConfig, device: torch.device, rank: int
) -> dict[str, dict[str, float]]:
    """table -> mean, min and max L2 norm of its rows; a collective every rank calls."""
    weights = table_weights(model)
    tables = config.embeddings.tables
    sums = torch.zeros(len(tables), 2, dtype=torch.float64, device=device)  # norm sum, rows
    extremes = torch.full((len(tables), 2), float("-inf"), dtype=torch.float64, device=device)
    for index, table in enumerate(tables):  # the same order on every rank
        weight = weights[table.name]
        if splits_columns(weight, table.embedding_dim):
            squares = torch.zeros(table.num_embeddings, device=device)
            for shard, row0, _ in local_shards(weight):
                squares[row0 : row0 + len(shard)] += _row_squares(shard)
            dist.all_reduce(squares)
            norms = squares.sqrt() if rank == 0 else squares[:0]  # count each row once
        else:
            parts = [_row_squares(shard) for shard, _, _ in local_shards(weight)]
            norms = torch.cat(parts).sqrt() if parts else torch.zeros(0, device=device)
        if len(norms):
            sums[index, 0], sums[index, 1] = norms.sum(), len(norms)
            extremes[index, 0], extremes[index, 1] = norms.max(), -norms.min()
    dist.all_reduce(sums)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return {
        table.name: {
            "mean_norm": float(sums[index, 0] / sums[index, 1].clamp(min=1)),
            "min_norm": float(-extremes[index, 1]),
            "max_norm": float(extremes[index, 0]),
        }
        for index, table in enumerate(tables)
    }
