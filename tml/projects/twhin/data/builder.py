"""Arrays of positive edges -> an `EdgeBatch`, with its uniform negatives drawn.

The layout of what is built (slots, owners, the chunk rule) is the batch contract, batch.py.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.batch.layout import GraphShape, SlotLayout


class EdgeBatchBuilder:
    """Turns arrays of positive edges into an `EdgeBatch`, sampling the negatives."""

    def __init__(self, shape: GraphShape, layout: SlotLayout) -> None:
        self.shape = shape
        self.table_names = list(shape.table_names)
        self.table_sizes = np.asarray(shape.table_sizes, dtype=np.int64)
        self.relation_lhs_table = np.asarray([lhs for lhs, _ in shape.relation_tables], np.int64)
        self.relation_rhs_table = np.asarray([rhs for _, rhs in shape.relation_tables], np.int64)
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
            layout=layout,
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
        owner_relation = np.repeat(
            np.arange(layout.num_relations), layout.owners_per_relation(counts)
        )
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
