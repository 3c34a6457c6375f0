"""`warm_start.anchor`: an L2 pull of the old rows toward their values in the previous version.

A warm-started run keeps a frozen copy of the tables it started from (`AnchoredTables`, a second
EmbeddingBagCollection sharded like the first and looked up with the same batch, so a rank
never holds more than its shards of it), and `AnchorTerm` adds

    anchor * sum over the positives' rows r of old entities of ||e_r - a_r||^2

per positive to the loss, like the N3 term: only the rows a step trains are pulled, and new
entities (rows at or past `old_rows` of their table) are free. The copy never trains: its output
is detached, so no gradient reaches its kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import KeyedTensor

    from tml.projects.twhin.batch.edge_batch import EdgeBatch

ANCHOR_SUFFIX = "__anchor"
"""The frozen copy of table T is the TorchRec table `T__anchor` (looked up by feature T)."""


def anchor_table_name(table: str) -> str:
    return f"{table}{ANCHOR_SUFFIX}"


class AnchorTerm(nn.Module):
    """The anchor's loss term; `old_rows` (a buffer, so checkpoints keep it) says which rows of
    each table are old: 0 until a warm start sets them."""

    def __init__(self, tables: list[str], strength: float) -> None:
        super().__init__()
        self.tables = tables
        self.strength = strength
        self.register_buffer("old_rows", torch.zeros(len(tables), dtype=torch.int64))

    def forward(self, live: KeyedTensor, anchored: KeyedTensor, batch: EdgeBatch) -> torch.Tensor:
        if not self.training:  # validation's loss stays the model's own
            return live.values().sum() * 0.0
        positives = 2 * batch.relation.shape[0]  # slots [0, 2B): the positives' lhs and rhs
        real = (batch.weight > 0).repeat(2)
        live_rows, anchored_rows = live.to_dict(), anchored.to_dict()
        total = live.values().sum() * 0.0  # differentiable zero
        for index, table in enumerate(self.tables):
            lookups = batch.lookups[table]
            found = lookups.lengths()[:positives] > 0
            ids = torch.full((positives,), -1, dtype=torch.int64, device=found.device)
            ids[found] = lookups.values()[: int(found.sum())]
            old_rows = cast(torch.Tensor, self.old_rows)
            old = found & real & (ids < old_rows[index])
            difference = live_rows[table][:positives] - anchored_rows[table][:positives].detach()
            total = total + (difference.pow(2).sum(-1) * old).sum()
        return self.strength * total / max(batch.pieces.num_real, 1)
