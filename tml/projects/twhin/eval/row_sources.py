"""Where ranking reads table rows: the pieces of each table this process holds.

A row source lists a table's pieces on this rank as (first row, first column, block): the shards
of the sharded model during training (`ShardedRows`), windows of a checkpoint read from disk for
`evaluate` on one process or N (`CheckpointRows`), or whole tensors (`TensorRows`, one process).
Ranking needs two things from it, both collectives when the job has several ranks:

* `lookup`: the full rows of a few ids (the queries and their true entities): each rank fills
  the parts it holds into zeros, one all-reduce sums them;
* `row_blocks`: full rows, in blocks of bounded size, of the rows this rank counts. A table whose
  shards hold whole rows (row_wise, table_wise, table_row_wise) is read where it lies, without a
  copy. A table split by columns (column_wise, table_column_wise) is assembled a block at a time:
  each rank fills its columns of the block, one all-reduce sums them, and each rank counts its
  1/N of the block's rows. Moving rows costs the table's size once per pass whatever the number
  of queries, where summing partial scores would move queries x rows numbers.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from tml.projects.twhin.artifacts.checkpoints import ROWS_PER_READ, iter_table_rows
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.parallel.tables import local_shards, splits_columns, table_weights

Piece = tuple[int, int, torch.Tensor]
"""(first row, first column, rows x columns) of a table."""


class RowSource(abc.ABC):
    """This rank's pieces of every table, and the collectives ranking builds on them."""

    sweep_queries: int = 1 << 12
    """Queries one pass over the rows should serve: passes are cheap for rows in memory (small
    passes keep the evaluation's time limit fine-grained), costly for rows read from disk."""

    def __init__(self, tables: dict[str, tuple[int, int]], rank: int, world_size: int,
                 device: torch.device) -> None:  # fmt: skip
        self.shapes = tables  # table -> (rows, dim)
        self.rank, self.world_size, self.device = rank, world_size, device

    @abc.abstractmethod
    def pieces(self, table: str) -> Iterator[Piece]:
        """This rank's pieces of `table`; across ranks they cover every entry once."""

    def splits_columns(self, table: str) -> bool:
        """Whether some piece, on any rank, holds only part of a row (the same on every rank)."""
        return False

    def all_reduce(
        self, tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
    ) -> None:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=op)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (e.g. a time limit passed)."""
        value = torch.tensor([float(flag)], device=self.device)
        self.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """(len(ids), dim) float32 full rows of `ids` (the same ids on every rank)."""
        ids = ids.to(self.device)
        out = torch.zeros(len(ids), self.shapes[table][1], device=self.device)
        for first_row, first_column, block in self.pieces(table):
            inside = (ids >= first_row) & (ids < first_row + len(block))
            if inside.any():
                columns = slice(first_column, first_column + block.shape[1])
                out[inside, columns] = block[ids[inside] - first_row].float()
        self.all_reduce(out)
        return out

    def row_blocks(self, table: str, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, full float32 rows) of the rows this rank counts, at most `max_rows` each."""
        if self.splits_columns(table):
            yield from self._assembled_blocks(table, max_rows)
            return
        for first_row, _, block in self.pieces(table):
            for start in range(0, len(block), max_rows):
                yield first_row + start, block[start : start + max_rows].float()

    def _assembled_blocks(self, table: str, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Blocks of `max_rows` rows summed from every rank's columns; this rank keeps 1/N."""
        rows, dim = self.shapes[table]
        pieces = list(self.pieces(table))  # views of the shards
        share = math.ceil(max_rows / self.world_size)
        for start in range(0, rows, share * self.world_size):
            stop = min(start + share * self.world_size, rows)
            block = torch.zeros(stop - start, dim, device=self.device)
            for first_row, first_column, piece in pieces:
                low, high = max(start, first_row), min(stop, first_row + len(piece))
                if low < high:
                    block[
                        low - start : high - start, first_column : first_column + piece.shape[1]
                    ] = piece[low - first_row : high - first_row]
            self.all_reduce(block)
            mine = block[self.rank * share : (self.rank + 1) * share]
            if len(mine):
                yield start + self.rank * share, mine


def table_shapes(config: TwhinModelConfig) -> dict[str, tuple[int, int]]:
    return {
        table.name: (table.num_embeddings, table.embedding_dim)
        for table in config.embeddings.tables
    }


class ShardedRows(RowSource):
    """The shards of a sharded (DMP) model; read in place, never copied whole."""

    def __init__(self, model: torch.nn.Module, config: TwhinModelConfig, rank: int,
                 world_size: int, device: torch.device) -> None:  # fmt: skip
        super().__init__(table_shapes(config), rank, world_size, device)
        self._weights = table_weights(model)

    def pieces(self, table: str) -> Iterator[Piece]:
        weight = self._weights[table]
        if isinstance(weight, torch.Tensor) and not hasattr(weight, "local_shards"):
            # Replicated on every rank (data_parallel): each rank takes its 1/N of the rows.
            share = math.ceil(len(weight) / self.world_size)
            if self.rank * share < len(weight):
                yield self.rank * share, 0, weight[self.rank * share : (self.rank + 1) * share]
            return
        for block, first_row, first_column in local_shards(weight):
            yield first_row, first_column, block.detach()

    def splits_columns(self, table: str) -> bool:
        return splits_columns(self._weights[table], self.shapes[table][1])


class CheckpointRows(RowSource):
    """A checkpoint's tables, streamed from disk in row windows: rank r of N reads its 1/N of
    each table's windows each time they are needed (memory: one window and one saved shard)."""

    sweep_queries = 1 << 16

    def __init__(self, checkpoint: Path, config: TwhinModelConfig, rank: int = 0,
                 world_size: int = 1, device: torch.device | None = None,
                 window_rows: int = ROWS_PER_READ) -> None:  # fmt: skip
        super().__init__(table_shapes(config), rank, world_size, device or torch.device("cpu"))
        self.checkpoint, self.window_rows = checkpoint, window_rows
        self._tables = {table.name: table for table in config.embeddings.tables}

    def pieces(self, table: str) -> Iterator[Piece]:
        windows = iter_table_rows(self.checkpoint, self._tables[table], self.window_rows,
                                  part=self.rank, parts=self.world_size)  # fmt: skip
        for first_row, window in windows:
            yield first_row, 0, window.to(self.device)


class TensorRows(RowSource):
    """Whole tables already in this process (tests, small tables): one process, no collectives."""

    def __init__(self, tables: dict[str, torch.Tensor]) -> None:
        shapes = {name: (len(rows), rows.shape[1]) for name, rows in tables.items()}
        super().__init__(shapes, rank=0, world_size=1, device=next(iter(tables.values())).device)
        self._tables = tables

    def pieces(self, table: str) -> Iterator[Piece]:
        yield 0, 0, self._tables[table]
