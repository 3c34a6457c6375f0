"""Load a saved tensor into the leading rows of a larger one, through DCP's resharding.

A graph that grew keeps its old ids in the first rows of each table, so warm starting a bigger
table means: the saved `(old_rows, ...)` tensor goes into rows `[0, old_rows)` of the new
`(new_rows, ...)` one, whatever the two plans and world sizes. `LeadingRowsPlanner` describes, for
each local shard of each destination, the part of it below `old_rows` as a chunk at its global
offset; DCP then reads exactly the saved pieces that overlap it, so no process ever holds more
of a table than its own shards (and one saved piece while reading). Rows from `old_rows` on are
left as they are. Reading goes through `safe_dcp` (no code runs from the checkpoint).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from tml.core import safe_dcp


def local_pieces(value: Any) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
    """(local tensor, its global offsets) of each piece of `value` held by this process: the
    local shards of a ShardedTensor, or a plain tensor at offset 0."""
    if hasattr(value, "local_shards"):
        return [
            (shard.tensor, tuple(shard.metadata.shard_offsets)) for shard in value.local_shards()
        ]
    return [(value, (0,) * value.dim())]


class LeadingRowsPlanner(safe_dcp.SafeLoadPlanner):
    """Loads each saved tensor named in `targets` into the leading rows of its destination
    (a ShardedTensor or tensor with as many or more rows and the same other dims)."""

    def __init__(self, targets: dict[str, Any]) -> None:
        super().__init__()
        self._targets = targets
        self._views: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def create_local_plan(self) -> LoadPlan:
        assert self.metadata is not None  # set by DCP before it asks for the plan
        items: list[ReadItem] = []
        for fqn, destination in self._targets.items():
            saved = self.metadata.state_dict_metadata[fqn]
            assert isinstance(saved, TensorStorageMetadata), f"{fqn} is not a tensor"
            old_rows = saved.size[0]
            for tensor, offsets in local_pieces(destination):
                rows = min(tensor.shape[0], old_rows - offsets[0])
                if rows <= 0:
                    continue
                view = tensor.narrow(0, 0, rows)
                chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=view.size())
                items += create_read_items_for_chunk_list(fqn, saved, [chunk])
                self._views[fqn, tuple(offsets)] = view
        return LoadPlan(items)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        assert index.offset is not None
        return self._views[index.fqn, tuple(index.offset)]


def load_leading_rows(targets: dict[str, Any], checkpoint: Any) -> None:
    """Fill the leading rows of every destination in `targets` (checkpoint key -> tensor) from
    `checkpoint`, in place. A collective: every rank calls it with its own shards."""
    safe_dcp.load(dict(targets), checkpoint, planner=LeadingRowsPlanner(targets))
