"""Streams parquet edges into per-rank `EdgeBatch`es: disjoint, complete, shuffled, resumable.

Order of the data, all derived from metadata (no edge is read to plan an epoch):
1. The global order: files sorted by path, row groups and rows in file order. `offset`/`limit`
   pick a range of it, so one data_root can hold both the train and the validation rows.
2. Each epoch the selected pieces (row-group ranges) are permuted with (seed, epoch), and the
   concatenation is cut into world_size contiguous spans: rank r reads only span r.
3. A rank groups its pieces into shuffle buffers of about `shuffle_buffer_edges`, permutes each
   buffer with (seed, epoch, rank, buffer), and cuts batches of per_replica_batch_size. Every rank
   runs the same number of steps (TorchRec's collectives need it); short batches are padded.
Because all of this is a pure function of (seed, epoch, rank, world size), resuming at step k of
an epoch skips whole buffers without reading them and reproduces the exact batches and negatives.
"""

from __future__ import annotations

import glob as globlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.core.errors import InputError
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.edges import EdgeBatch, EdgeBatchBuilder

COLUMNS = ("lhs", "rel", "rhs")


class DataError(InputError):
    """Edges that cannot be trained on; the message names the file, row group or row."""


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


def list_parquet_files(data_root: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """Resolve a directory, glob, file or fsspec URL into a sorted list of parquet files."""
    try:
        fs, path = fsspec.core.url_to_fs(data_root)
    except (ImportError, ValueError) as exc:  # e.g. gs:// without gcsfs installed
        raise DataError(f"data_root {data_root}: {exc}") from None
    if globlib.has_magic(path):
        # Skip Hadoop/Spark bookkeeping (_SUCCESS, _metadata) and hidden files a glob also matches.
        files = [f for f in fs.glob(path) if fs.isfile(f) and not _is_bookkeeping(f)]
    elif fs.isdir(path):
        files = [f for f in fs.find(path) if f.endswith(".parquet") and not _is_bookkeeping(f)]
    elif fs.isfile(path):
        files = [path]
    else:
        raise DataError(f"data_root {data_root}: no such file or directory")
    if not files:
        raise DataError(f"data_root {data_root}: no parquet files found")
    return fs, sorted(files)


def _is_bookkeeping(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(("_", "."))


class EdgeDataset:
    """The edges of one data config, planned from parquet metadata and read lazily."""

    def __init__(
        self,
        config: TwhinDataConfig,
        builder: EdgeBatchBuilder,
        relation_table_sizes: list[tuple[int, int]],
        *,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        name: str = "data",
    ) -> None:
        self.config = config
        self.builder = builder
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.name = name
        self._relation_sizes = np.asarray(relation_table_sizes, dtype=np.int64)
        # A few open files at a time: planning touches every file once, reading revisits them.
        self._parquet_file = lru_cache(maxsize=8)(self._open_parquet)
        self._row_group_start: dict[tuple[int, int], int] = {}
        self.fs, self.files = list_parquet_files(config.data_root)
        self.pieces = self._select_pieces(self._row_groups())
        self.num_edges = sum(piece.num_rows for piece in self.pieces)
        if self.num_edges == 0:
            raise DataError(
                f"{name}: data_root {config.data_root} holds no edges after offset="
                f"{config.offset}, limit={config.limit}"
            )
        self.edges_per_rank = math.ceil(self.num_edges / world_size)
        self.steps_per_epoch = math.ceil(self.edges_per_rank / config.per_replica_batch_size)

    # -- planning (metadata only) -----------------------------------------------------------

    def _row_groups(self) -> list[tuple[int, int, int]]:
        """(file index, row group, rows) in global order; checks each file's schema."""
        row_groups = []
        for index, path in enumerate(self.files):
            parquet = self._parquet_file(index)
            self._check_schema(path, parquet.schema_arrow)
            file_row = 0
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                self._row_group_start[(index, group)] = file_row
                row_groups.append((index, group, rows))
                file_row += rows
        return row_groups

    def _check_schema(self, path: str, schema: pa.Schema) -> None:
        for column in COLUMNS:
            if column not in schema.names:
                raise DataError(
                    f"{path}: missing column {column!r} (edges need int columns lhs, rel, rhs; "
                    f"found {', '.join(schema.names)})"
                )
            kind = schema.field(column).type
            if not pa.types.is_integer(kind):
                raise DataError(f"{path}: column {column!r} has type {kind}, expected integers")

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

    def _epoch_plan(self, epoch: int) -> list[list[Piece]]:
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

    # -- reading ------------------------------------------------------------------------------

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[EdgeBatch]:
        """Exactly `steps_per_epoch - start_step` batches of `epoch`, starting at `start_step`."""
        batch_size = self.config.per_replica_batch_size
        skip = start_step * batch_size
        step = start_step
        leftover = np.zeros((0, 3), np.int64)  # fewer than batch_size edges carried over
        for index, buffer in enumerate(self._epoch_plan(epoch)):
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
        return np.concatenate([self._read_piece(piece) for piece in self.pieces])

    def _make_batch(self, edges: np.ndarray, epoch: int, step: int) -> EdgeBatch:
        rng = np.random.default_rng([self.seed, epoch, self.rank, step, 1])
        return self.builder.build(edges[:, 0], edges[:, 1], edges[:, 2], rng)

    def _read_buffer(self, buffer: list[Piece], epoch: int, index: int) -> np.ndarray:
        edges = np.concatenate([self._read_piece(piece) for piece in buffer])
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, self.rank, index, 2])
            edges = edges[rng.permutation(len(edges))]
        return edges

    def _read_piece(self, piece: Piece) -> np.ndarray:
        path = self.files[piece.file]
        table = self._parquet_file(piece.file).read_row_group(piece.row_group, columns=COLUMNS)
        table = table.slice(piece.start, piece.num_rows)
        where = f"{path} row group {piece.row_group}"
        columns = []
        for name in COLUMNS:
            column = table.column(name)
            if column.null_count:
                nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
                row = self._first_row(piece, nulls)
                raise DataError(f"{where}: null {name} at file row {row}")
            columns.append(column.to_numpy().astype(np.int64, copy=False))
        edges = np.stack(columns, axis=1)
        self._check_values(edges, piece, where)
        return edges

    def _check_values(self, edges: np.ndarray, piece: Piece, where: str) -> None:
        lhs, rel, rhs = edges[:, 0], edges[:, 1], edges[:, 2]
        num_relations = len(self._relation_sizes)
        bad = (rel < 0) | (rel >= num_relations)
        if bad.any():
            row = self._first_row(piece, bad)
            raise DataError(
                f"{where}: rel={rel[bad][0]} at file row {row} is outside [0, {num_relations}) "
                "(rel indexes model.relations)"
            )
        sizes = self._relation_sizes[rel]
        for side, ids, limit in (("lhs", lhs, sizes[:, 0]), ("rhs", rhs, sizes[:, 1])):
            bad = (ids < 0) | (ids >= limit)
            if bad.any():
                row = self._first_row(piece, bad)
                raise DataError(
                    f"{where}: {side}={ids[bad][0]} at file row {row} is outside "
                    f"[0, {limit[bad][0]}) of its table (relation {rel[bad][0]})"
                )

    def _first_row(self, piece: Piece, bad: np.ndarray) -> int:
        """Row number within the file (0-based) of the first flagged row of a piece."""
        group_start = self._row_group_start[(piece.file, piece.row_group)]
        return int(np.flatnonzero(bad)[0]) + piece.start + group_start

    def _open_parquet(self, index: int) -> pq.ParquetFile:
        path = self.files[index]
        try:
            return pq.ParquetFile(self.fs.open(path, "rb"))
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path}: cannot read as parquet: {exc}") from None
