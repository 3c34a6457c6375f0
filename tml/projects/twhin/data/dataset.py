"""`EdgeDataset`: parquet edges -> per-rank `EdgeBatch`es, disjoint, complete, shuffled, resumable.

It joins the three steps of the data flow: `EdgePlan` (metadata only: which rows each rank reads
each epoch), `EdgeReader` (rows in, values checked) and `EdgeBatchBuilder` (batch out, negatives
drawn). Shuffling and negatives use generators seeded by (seed, epoch, rank, buffer or step), so
any batch can be rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.batch.layout import GraphShape, SlotLayout
from tml.projects.twhin.data.builder import EdgeBatchBuilder
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.files import EdgeFiles
from tml.projects.twhin.data.plan import EdgePlan, Piece
from tml.projects.twhin.data.reader import EdgeReader


class EdgeDataset:
    """The edges of one data config, planned up front and read lazily, in batches."""

    def __init__(self, plan: EdgePlan, reader: EdgeReader, builder: EdgeBatchBuilder) -> None:
        self.plan = plan
        self.reader = reader
        self.builder = builder
        self.config = plan.config
        self.num_edges = plan.num_edges
        self.steps_per_epoch = plan.steps_per_epoch
        self.files = plan.files.paths

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[EdgeBatch]:
        """Exactly `steps_per_epoch - start_step` batches of `epoch`, starting at `start_step`."""
        batch_size = self.config.per_replica_batch_size
        skip = start_step * batch_size
        step = start_step
        leftover = np.zeros((0, 3), np.int64)  # fewer than batch_size edges carried over
        for index, buffer in enumerate(self.plan.epoch_buffers(epoch)):
            rows = sum(piece.num_rows for piece in buffer)
            if skip >= rows:  # consumed before the resume point: never read it
                skip -= rows
                continue
            edges = self._read_buffer(buffer, epoch, index)[skip:]
            skip = 0
            if len(leftover):
                edges = np.concatenate([leftover, edges])
            full = len(edges) // batch_size
            for start in range(0, full * batch_size, batch_size):
                yield self._make_batch(edges[start : start + batch_size], epoch, step)
                step += 1
            leftover = edges[full * batch_size :]
        if len(leftover):
            yield self._make_batch(leftover, epoch, step)
            step += 1
        while step < self.steps_per_epoch:  # ranks with a shorter span pad to the common count
            yield self._make_batch(np.zeros((0, 3), np.int64), epoch, step)
            step += 1

    def all_edges(self) -> np.ndarray:
        """Every selected edge (lhs, rel, rhs) in global order, as one array (for evaluation:
        memory grows with the number of edges)."""
        return self.reader.read(self.plan.pieces)

    def _make_batch(self, edges: np.ndarray, epoch: int, step: int) -> EdgeBatch:
        rng = np.random.default_rng([self.plan.seed, epoch, self.plan.rank, step, 1])
        return self.builder.build(edges[:, 0], edges[:, 1], edges[:, 2], rng)

    def _read_buffer(self, buffer: list[Piece], epoch: int, index: int) -> np.ndarray:
        edges = self.reader.read(buffer)
        if self.plan.shuffle:
            rng = np.random.default_rng([self.plan.seed, epoch, self.plan.rank, index, 2])
            edges = edges[rng.permutation(len(edges))]
        return edges


def make_dataset(
    shape: GraphShape, data: TwhinDataConfig, name: str, *, rank: int, world_size: int,
    seed: int, shuffle: bool,
) -> EdgeDataset:  # fmt: skip
    """An `EdgeDataset` of `data`'s edges in batches of `shape`'s tables and relations."""
    plan = EdgePlan(
        data, EdgeFiles(data.data_root), rank=rank, world_size=world_size, seed=seed,
        shuffle=shuffle, name=name,
    )  # fmt: skip
    layout = SlotLayout(
        graph=shape,
        batch_size=data.per_replica_batch_size,
        global_negatives=data.global_negatives,
        in_batch_negatives=data.in_batch_negatives,
        global_negatives_per_chunk=data.global_negatives_per_chunk,
    )
    reader = EdgeReader(plan, shape.relation_table_sizes)
    return EdgeDataset(plan, reader, EdgeBatchBuilder(layout))
