"""Access to the sharded tables' state: this rank's shards, full tables gathered on rank 0, and
the relation parameters. Used by validation, table norms, initialisation and tests."""

from __future__ import annotations

from typing import Any

import torch

from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.model import table_of_key


def table_weights(model: torch.nn.Module) -> dict[str, Any]:
    """table name -> its (sharded) weight in the model's state dict."""
    weights = {}
    for key, value in model.state_dict().items():
        if (table := table_of_key(key)) is not None:
            weights[table] = value
    return weights


def gather_tables(
    model: torch.nn.Module, config: TwhinModelConfig, rank: int, device: torch.device
) -> dict[str, torch.Tensor] | None:
    """Full tables on rank 0 (None elsewhere); a collective every rank must call."""
    weights = table_weights(model)
    full = {}
    for table in config.embeddings.tables:  # the same order on every rank
        weight = weights[table.name]
        if hasattr(weight, "gather"):  # ShardedTensor
            out = (
                torch.empty(weight.size(), dtype=weight.dtype, device=device) if rank == 0 else None
            )
            weight.gather(dst=0, out=out)
        else:
            out = weight.detach().clone()
        if out is not None:
            full[table.name] = out.cpu()
    return full if rank == 0 else None


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
