"""Arrays of positive edges -> an `EdgeBatch`, with its uniform negatives drawn.

The layout of what is built (slots, owners, the chunk rule, the order of positives) is the batch
contract, `batch/`.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.batch.layout import SlotLayout, SlotPieces


class EdgeBatchBuilder:
    """Turns arrays of positive edges into an `EdgeBatch`, sampling the negatives."""

    def __init__(self, layout: SlotLayout) -> None:
        shape = layout.graph
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
        order, counts = layout.row_order(relation)
        pieces = layout.pieces(counts)
        # Padding rows look up row 0 of the first table and are in no bucket.
        lhs = np.concatenate([lhs[order], np.zeros(padding, np.int64)])
        rhs = np.concatenate([rhs[order], np.zeros(padding, np.int64)])
        relation = np.concatenate([relation[order], np.zeros(padding, np.int64)])
        weight = np.concatenate([np.ones(count, np.float32), np.zeros(padding, np.float32)])

        slot_table, slot_id = self._positive_slots(lhs, relation, rhs, count)
        negative_table, negative_id = self._global_negative_slots(pieces, rng)
        return EdgeBatch(
            lookups=self._to_kjt(
                np.concatenate([slot_table, negative_table]),
                np.concatenate([slot_id, negative_id]),
            ),
            relation=torch.from_numpy(relation),
            weight=torch.from_numpy(weight),
            pieces=pieces,
            layout=layout,
        )

    def _positive_slots(
        self, lhs: np.ndarray, relation: np.ndarray, rhs: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        real = np.arange(len(relation)) < count
        lhs_tables = np.where(real, self.relation_lhs_table[relation], 0)
        rhs_tables = np.where(real, self.relation_rhs_table[relation], 0)
        return np.concatenate([lhs_tables, rhs_tables]), np.concatenate([lhs, rhs])

    def _global_negative_slots(
        self, pieces: SlotPieces, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """G lhs negatives per owner, then G rhs negatives per owner (see SlotLayout): owners are
        the tables (each relation side draws from its table's) or the chunks, in bucket order;
        the slots of unused chunk owners look up row 0 of the first table."""
        layout = self.layout
        count = layout.global_negatives
        if count == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if layout.global_negatives_per_chunk:
            group_tables = np.asarray(layout.graph.group_tables, np.int64).reshape(-1, 2)
            chunk_group = np.repeat(
                [bucket.group for bucket in pieces.buckets],
                [bucket.num_chunks for bucket in pieces.buckets],
            ).astype(np.int64)
            lhs_owners, rhs_owners = group_tables[chunk_group].T
        else:
            lhs_owners = np.asarray(layout.lhs_tables, np.int64)
            rhs_owners = np.asarray(layout.rhs_tables, np.int64)
        lhs_tables = np.repeat(lhs_owners, count)
        rhs_tables = np.repeat(rhs_owners, count)
        drawn = np.concatenate([lhs_tables, rhs_tables])
        ids = np.floor(rng.random(len(drawn)) * self.table_sizes[drawn]).astype(np.int64)
        lhs_ids, rhs_ids = ids[: len(lhs_tables)], ids[len(lhs_tables) :]
        filler = np.zeros(count * layout.num_owners[0] - len(lhs_tables), np.int64)
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
