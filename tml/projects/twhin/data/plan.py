"""Which edges each rank reads, in which order: planned from parquet metadata alone.

1. The global order: files sorted by path, row groups and rows in file order. `offset`/`limit`
   pick a range of it, so one data_root can hold both the train and the validation rows.
2. Each epoch the selected pieces (row-group ranges) are permuted with (seed, epoch), and the
   concatenation is cut into world_size contiguous spans: rank r reads only span r.
3. A rank groups its pieces into shuffle buffers of about `shuffle_buffer_edges`; the reader
   permutes each buffer and cuts batches. Every rank runs the same number of steps (TorchRec's
   collectives need it).
All of it is a pure function of (seed, epoch, rank, world size), so a resumed run skips whole
buffers without reading them and reproduces the exact batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.files import DataError, EdgeFiles


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of one row group of one file."""

    file: int
    row_group: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


class EdgePlan:
    """The selected edges of one data config and this rank's share of each epoch."""

    def __init__(
        self,
        config: TwhinDataConfig,
        files: EdgeFiles,
        *,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        name: str,
    ) -> None:
        self.config = config
        self.files = files
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.row_group_start: dict[tuple[int, int], int] = {}  # first file row of a row group
        self.pieces = self._select_pieces(self._row_groups())
        self.num_edges = sum(piece.num_rows for piece in self.pieces)
        if self.num_edges == 0:
            raise DataError(
                f"{name}: data_root {config.data_root} holds no edges after offset="
                f"{config.offset}, limit={config.limit}"
            )
        self.edges_per_rank = math.ceil(self.num_edges / world_size)
        self.steps_per_epoch = math.ceil(self.edges_per_rank / config.per_replica_batch_size)

    def _row_groups(self) -> list[tuple[int, int, int]]:
        """(file index, row group, rows) in global order; checks each file's schema."""
        row_groups = []
        for index in range(len(self.files)):
            self.files.check_schema(index)
            metadata = self.files.open(index).metadata
            file_row = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                self.row_group_start[(index, group)] = file_row
                row_groups.append((index, group, rows))
                file_row += rows
        return row_groups

    def _select_pieces(self, row_groups: list[tuple[int, int, int]]) -> list[Piece]:
        begin = self.config.offset
        end = begin + self.config.limit if self.config.limit is not None else math.inf
        pieces, cursor = [], 0
        for file, group, rows in row_groups:
            start, stop = max(begin - cursor, 0), min(end - cursor, rows)
            if start < stop:
                pieces.append(Piece(file, group, int(start), int(stop)))
            cursor += rows
        return pieces

    def epoch_buffers(self, epoch: int) -> list[list[Piece]]:
        """This rank's shuffle buffers for `epoch`: lists of pieces, each list read together."""
        order = list(self.pieces)
        if self.shuffle:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(len(order))
            order = [order[i] for i in permutation]
        span_start = self.rank * self.edges_per_rank
        span_stop = min(span_start + self.edges_per_rank, self.num_edges)
        mine, cursor = [], 0
        for piece in order:
            lo, hi = max(span_start - cursor, 0), min(span_stop - cursor, piece.num_rows)
            if lo < hi:
                mine.append(Piece(piece.file, piece.row_group, piece.start + lo, piece.start + hi))
            cursor += piece.num_rows
        buffers, current, current_rows = [], [], 0
        for piece in mine:
            current.append(piece)
            current_rows += piece.num_rows
            if current_rows >= self.config.shuffle_buffer_edges:
                buffers.append(current)
                current, current_rows = [], 0
        if current:
            buffers.append(current)
        return buffers
