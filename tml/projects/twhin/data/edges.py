"""`EdgeBatch`: one rank's positive edges plus everything needed to score their negatives.

All embedding lookups of a step go into one KeyedJaggedTensor so TorchRec can shard and pipeline
them. The lookups are laid out in fixed *slots* (same count on every rank and every step, which
TorchRec's all-to-alls require):

    slots [0, B)                      lhs entity of positive i
    slots [B, 2B)                     rhs entity of positive i
    slots 2B + q*G + [0, G)           uniform lhs negatives of owner q (from its lhs table)
    slots 2B + Q*G + q*G + [0, G)     uniform rhs negatives of owner q (from its rhs table)

for Q owners (so each relation's lhs negatives, and its rhs ones, are one contiguous run).

The owners of uniform negatives are the relations (q = r: every positive of relation r in the
batch shares its 2G negatives) or, with `global_negatives_per_chunk`, the chunks of K + 1
positives of a relation (q counts chunks in relation order, PyTorch-BigGraph's sampling; the
layout reserves room for the most chunks a batch can have and fills unused ones with row 0 of the first table).

Each slot is one bag of size 1 in its table's feature and an empty bag in every other table's, so
the pooled output of table t at slot s is the embedding of slot s when s belongs to t.
Positives are sorted by relation (`relation_offsets`), so the scorer handles each relation as one
contiguous slice, and in-batch negatives need no lookups: a relation's positives are cut into
chunks and each is corrupted with the others of its chunk (see `EdgeScorer`).
A short final batch is padded to B with weight-0 edges after the real ones; they are scored by
no relation and contribute nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from tml.projects.twhin.data.chunks import chunks_per_relation, max_chunks


@dataclass
class EdgeBatch(Pipelineable):
    """Tensors of one step on one rank (see the module docstring for the slot layout)."""

    lookups: KeyedJaggedTensor
    relation: torch.Tensor  # (B,) int64 relation index of each positive, ascending
    weight: torch.Tensor  # (B,) float32, 1 for real edges, 0 for padding
    # Plain ints, so the scorer can slice and chunk without reading a device tensor back:
    relation_offsets: tuple[int, ...]  # (R + 1): relation r's positives are rows [o[r], o[r+1])
    in_batch_negatives: int  # K: a relation's positives are scored in chunks of K + 1
    global_negatives_per_chunk: bool  # uniform negatives drawn per chunk, not per relation

    def _map_tensors(self, apply: Callable[[Any], Any]) -> EdgeBatch:
        """A batch with `apply` run on each tensor field (the int fields are copied)."""
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


@dataclass(frozen=True)
class SlotLayout:
    """Sizes that fix the slot layout; shared by the batch builder and the model."""

    batch_size: int  # B
    global_negatives: int  # G
    in_batch_negatives: int  # K
    num_relations: int  # R
    global_negatives_per_chunk: bool = False

    @property
    def num_owners(self) -> int:
        """Relations, or the most chunks a batch can have, each drawing 2G negatives."""
        if not self.global_negatives_per_chunk:
            return self.num_relations
        return max_chunks(self.batch_size, self.in_batch_negatives, self.num_relations)

    @property
    def num_slots(self) -> int:
        return 2 * self.batch_size + 2 * self.global_negatives * self.num_owners

    def lhs_negative_slots(self, owner: int) -> slice:
        start = 2 * self.batch_size + self.global_negatives * owner
        return slice(start, start + self.global_negatives)

    def rhs_negative_slots(self, owner: int) -> slice:
        start = 2 * self.batch_size + self.global_negatives * (self.num_owners + owner)
        return slice(start, start + self.global_negatives)


class EdgeBatchBuilder:
    """Turns arrays of positive edges into an `EdgeBatch`, sampling the negatives."""

    def __init__(
        self,
        table_names: list[str],
        table_sizes: list[int],
        relation_tables: list[tuple[int, int]],
        layout: SlotLayout,
    ) -> None:
        self.table_names = table_names
        self.table_sizes = np.asarray(table_sizes, dtype=np.int64)
        self.relation_lhs_table = np.asarray([lhs for lhs, _ in relation_tables], dtype=np.int64)
        self.relation_rhs_table = np.asarray([rhs for _, rhs in relation_tables], dtype=np.int64)
        self.layout = layout

    def build(
        self, lhs: np.ndarray, relation: np.ndarray, rhs: np.ndarray, rng: np.random.Generator
    ) -> EdgeBatch:
        """Batch of the given (at most B) positives, padded to B; negatives drawn from `rng`."""
        layout = self.layout
        size, count = layout.batch_size, len(lhs)
        if count > size:
            raise ValueError(f"{count} edges do not fit a batch of {size}")
        padding = size - count
        order = np.argsort(relation, kind="stable")  # keeps the shuffled order within a relation
        offsets = np.zeros(layout.num_relations + 1, np.int64)
        np.cumsum(np.bincount(relation, minlength=layout.num_relations), out=offsets[1:])
        # Padding repeats the last relation so `relation` stays sorted; offsets exclude it.
        pad_relation = layout.num_relations - 1
        lhs = np.concatenate([lhs[order], np.zeros(padding, np.int64)])
        rhs = np.concatenate([rhs[order], np.zeros(padding, np.int64)])
        relation = np.concatenate([relation[order], np.full(padding, pad_relation, np.int64)])
        weight = np.concatenate([np.ones(count, np.float32), np.zeros(padding, np.float32)])

        slot_table, slot_id = self._positive_slots(lhs, relation, rhs)
        negative_table, negative_id = self._global_negative_slots(np.diff(offsets).tolist(), rng)
        return EdgeBatch(
            lookups=self._to_kjt(
                np.concatenate([slot_table, negative_table]),
                np.concatenate([slot_id, negative_id]),
            ),
            relation=torch.from_numpy(relation),
            weight=torch.from_numpy(weight),
            relation_offsets=tuple(offsets.tolist()),
            in_batch_negatives=layout.in_batch_negatives,
            global_negatives_per_chunk=layout.global_negatives_per_chunk,
        )

    def _positive_slots(
        self, lhs: np.ndarray, relation: np.ndarray, rhs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        tables = np.concatenate(
            [self.relation_lhs_table[relation], self.relation_rhs_table[relation]]
        )
        return tables, np.concatenate([lhs, rhs])

    def _global_negative_slots(
        self, counts: list[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        layout = self.layout
        count = layout.global_negatives
        if count == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        owner_relation = np.arange(layout.num_relations)
        if layout.global_negatives_per_chunk:
            chunks = chunks_per_relation(counts, layout.in_batch_negatives)
            owner_relation = np.repeat(owner_relation, chunks)
        # G lhs negatives per owner, then G rhs negatives per owner (see SlotLayout); the
        # slots of unused owners at the end of each run look up row 0 of the first table.
        lhs_tables = np.repeat(self.relation_lhs_table[owner_relation], count)
        rhs_tables = np.repeat(self.relation_rhs_table[owner_relation], count)
        drawn = np.concatenate([lhs_tables, rhs_tables])
        ids = np.floor(rng.random(len(drawn)) * self.table_sizes[drawn]).astype(np.int64)
        lhs_ids, rhs_ids = np.split(ids, 2)
        filler = np.zeros(count * (layout.num_owners - len(owner_relation)), np.int64)
        return (
            np.concatenate([lhs_tables, filler, rhs_tables, filler]),
            np.concatenate([lhs_ids, filler, rhs_ids, filler]),
        )

    def _to_kjt(self, slot_table: np.ndarray, slot_id: np.ndarray) -> KeyedJaggedTensor:
        num_tables = len(self.table_names)
        lengths = (np.arange(num_tables)[:, None] == slot_table[None, :]).astype(np.int32)
        values = slot_id[np.argsort(slot_table, kind="stable")]
        return KeyedJaggedTensor(
            keys=self.table_names,
            values=torch.from_numpy(values),
            lengths=torch.from_numpy(lengths.reshape(-1)),
        )
