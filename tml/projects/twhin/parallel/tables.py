"""Access to the sharded tables' state: this rank's shards, how they split the tables, and the
relation parameters. Used by validation, table norms and initialisation. No function here
gathers a whole table: evaluation works on the shards (eval/row_sources.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from tml.projects.twhin.models.model import table_of_key


def table_weights(model: torch.nn.Module) -> dict[str, Any]:
    """table name -> its (sharded) weight in the model's state dict."""
    weights = {}
    for key, value in model.state_dict().items():
        if (table := table_of_key(key)) is not None:
            weights[table] = value
    return weights


def dense_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The relation operators' parameters (replicated on every rank), on CPU."""
    return {
        key: value.detach().cpu()
        for key, value in model.state_dict().items()
        if key.startswith("scorer.")
    }


def local_shards(weight: Any) -> list[tuple[torch.Tensor, int, int]]:
    """(tensor view, first row, first column) of each shard of a table held by this rank."""
    if isinstance(weight, torch.Tensor) and not hasattr(weight, "local_shards"):
        return [(weight, 0, 0)]
    return [
        (shard.tensor, shard.metadata.shard_offsets[0], shard.metadata.shard_offsets[1])
        for shard in weight.local_shards()
    ]


def splits_columns(weight: object, dim: int) -> bool:
    """Whether some shard holds only part of a row (the same answer on every rank)."""
    if not hasattr(weight, "metadata"):
        return False
    return any(shard.shard_sizes[1] != dim for shard in weight.metadata().shards_metadata)


def whole_table_rows(
    weight: Any, num_rows: int, dim: int, max_rows: int
) -> list[tuple[int, torch.Tensor]] | None:
    """(first row, rows) views of at most `max_rows` rows, in row order, when this rank's shards
    hold every row of the table whole (world size 1, or the table placed on this rank); None
    when some rows or columns live elsewhere. Nothing is copied."""
    shards = sorted((row0, shard) for shard, row0, col0 in local_shards(weight) if col0 == 0)
    if any(shard.shape[1] != dim for _, shard in shards):
        return None
    expected = 0
    for row0, shard in shards:
        if row0 != expected:
            return None
        expected += shard.shape[0]
    if expected != num_rows:
        return None
    return list(_windows(shards, max_rows))


def _windows(
    shards: list[tuple[int, torch.Tensor]], max_rows: int
) -> Iterator[tuple[int, torch.Tensor]]:
    for row0, shard in shards:
        for start in range(0, shard.shape[0], max_rows):
            yield row0 + start, shard[start : start + max_rows].detach()
