"""Access to the sharded tables' state: this rank's shards, how they split the tables, and the
relation parameters. Used by validation, table norms and initialisation. No function here
gathers a whole table: evaluation works on the shards (eval/row_sources.py)."""

from __future__ import annotations

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
