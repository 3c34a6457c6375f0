"""`EdgeBatch`: one step's lookups and positives on one rank, laid out as `SlotLayout` says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from tml.projects.twhin.batch.layout import SlotLayout, SlotPieces


@dataclass
class EdgeBatch(Pipelineable):
    """Tensors of one step on one rank (see the module docstring for the slot layout)."""

    lookups: KeyedJaggedTensor
    relation: torch.Tensor  # (B,) int64 relation index of each positive (padding: 0)
    weight: torch.Tensor  # (B,) float32, 1 for real edges, 0 for padding
    # Plain ints, so the scorer can slice and chunk without reading a device tensor back:
    pieces: SlotPieces  # which rows and slots hold each bucket of chunks and its negatives
    layout: SlotLayout

    def _map_tensors(self, apply: Callable[[Any], Any]) -> EdgeBatch:
        """A batch with `apply` run on each tensor field (the other fields are shared)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return EdgeBatch(
            **{
                name: apply(value) if isinstance(value, torch.Tensor | KeyedJaggedTensor) else value
                for name, value in values.items()
            }
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> EdgeBatch:
        return self._map_tensors(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        self._map_tensors(lambda tensor: tensor.record_stream(stream))

    def pin_memory(self) -> EdgeBatch:
        return self._map_tensors(lambda tensor: tensor.pin_memory())

    @property
    def num_real_edges(self) -> int:
        return int(self.weight.sum().item())
