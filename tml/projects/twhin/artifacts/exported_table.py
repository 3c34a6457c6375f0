"""An exported table read lazily: row windows, a few rows, a few names; never the whole table.

For search over tables larger than memory (search/). `open_table` prefers the `npy` export
(`<table>.npy` memory-mapped a window at a time, `<table>.names.txt` read line by line) and
falls back to the parquet export (read a row group, or a batch, at a time). Either way memory
holds one window, and each window's mapping is dropped before the next, so the file's pages do
not pile up in the process's resident memory.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tml.projects.twhin.artifacts.embedding_files import parquet_file

WINDOW_ROWS = 1 << 16


class ExportedTable(abc.ABC):
    """One exported table; row i is entity id i."""

    def __init__(self, name: str, path: Path, num_rows: int, dim: int, named: bool) -> None:
        self.name, self.path = name, path  # path: the file the vectors come from
        self.num_rows, self.dim, self.named = num_rows, dim, named

    @abc.abstractmethod
    def windows(self, max_rows: int = WINDOW_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) of every row, in order, at most `max_rows` at a time."""

    @abc.abstractmethod
    def rows(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) float32 vectors of `ids`, reading only the windows that hold them."""

    @abc.abstractmethod
    def names_of(self, ids: list[int]) -> list[str | None]:
        """The names of `ids` (None for every id of a table without names)."""

    @abc.abstractmethod
    def _row_of_name(self, name: str) -> int | None:
        """The first row named `name`, by a scan that stops there."""

    def find(self, query: str) -> int:
        """The row of an entity given by name or, failing that, by id."""
        row = self._row_of_name(query) if self.named else None
        if row is not None:
            return row
        if query.lstrip("-").isdigit() and 0 <= int(query) < self.num_rows:
            return int(query)
        kind = "a name or an id" if self.named else "an id (it has no names)"
        raise KeyError(
            f"{query!r} is not {kind} of table {self.name!r} (ids 0..{self.num_rows - 1})"
        )


class NpyTable(ExportedTable):
    """`<table>.npy` and, if present, `<table>.names.txt` (line i = the name of id i)."""

    def __init__(self, name: str, path: Path) -> None:
        array = np.load(path, mmap_mode="r")
        self._offset, self._dtype = array.offset, array.dtype
        rows, dim = array.shape
        del array
        self._names = path.with_suffix(".names.txt")
        super().__init__(name, path, rows, dim, named=self._names.is_file())

    def _window(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows [start, stop), read through a mapping of just those rows."""
        mapped = np.memmap(self.path, self._dtype, mode="r", shape=(stop - start, self.dim),
                           offset=self._offset + start * self.dim * self._dtype.itemsize)  # fmt: skip
        window = np.array(mapped, dtype=np.float32)
        del mapped
        return window

    def windows(self, max_rows: int = WINDOW_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.num_rows, max_rows):
            yield start, self._window(start, min(start + max_rows, self.num_rows))

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), np.float32)
        windows = ids // WINDOW_ROWS
        for window in np.unique(windows):
            mine = windows == window
            wanted = ids[mine]
            low = int(wanted.min())
            out[mine] = self._window(low, int(wanted.max()) + 1)[wanted - low]
        return out

    def names_of(self, ids: list[int]) -> list[str | None]:
        if not self.named or not ids:
            return [None] * len(ids)
        wanted = set(ids)
        found: dict[int, str | None] = {}
        with open(self._names, encoding="utf-8") as lines:
            for row, line in enumerate(itertools.islice(lines, max(wanted) + 1)):
                if row in wanted:
                    found[row] = line.rstrip("\n") or None  # the writer's "" for no name
        return [found.get(row) for row in ids]

    def _row_of_name(self, name: str) -> int | None:
        target = name + "\n"
        with open(self._names, encoding="utf-8") as lines:
            for row, line in enumerate(lines):
                if line == target:
                    return row
        return None


class ParquetTable(ExportedTable):
    """`<table>.parquet` (id, name?, embedding), read a row group at a time."""

    def __init__(self, name: str, path: Path) -> None:
        self._file = pq.ParquetFile(path)
        schema = self._file.schema_arrow
        dim = schema.field("embedding").type.list_size
        super().__init__(name, path, self._file.metadata.num_rows, dim,
                         named="name" in schema.names)  # fmt: skip
        sizes = [
            self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)
        ]
        self._group_starts = np.cumsum([0, *sizes])

    def windows(self, max_rows: int = WINDOW_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for batch in self._file.iter_batches(batch_size=max_rows, columns=["embedding"]):
            vectors = _vectors(batch.column(0), self.dim)
            yield start, vectors
            start += len(vectors)

    def _groups(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._group_starts, ids, side="right") - 1

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), np.float32)
        groups = self._groups(ids)
        for group in np.unique(groups):
            column = self._file.read_row_group(int(group), columns=["embedding"]).column(0)
            mine = groups == group
            out[mine] = _vectors(column, self.dim)[ids[mine] - self._group_starts[group]]
        return out

    def names_of(self, ids: list[int]) -> list[str | None]:
        if not self.named:
            return [None] * len(ids)
        found: dict[int, str | None] = {}
        groups = self._groups(np.asarray(ids, dtype=np.int64))
        for group in np.unique(groups):
            names = self._file.read_row_group(int(group), columns=["name"]).column(0)
            for row in np.asarray(ids)[groups == group].tolist():
                found[row] = names[row - int(self._group_starts[group])].as_py()
        return [found[row] for row in ids]

    def _row_of_name(self, name: str) -> int | None:
        start = 0
        for batch in self._file.iter_batches(columns=["name"]):
            hits = pc.indices_nonzero(pc.equal(batch.column(0), name))
            if len(hits):
                return start + hits[0].as_py()
            start += batch.num_rows
        return None


class ArrayTable(ExportedTable):
    """A table already in memory (small tables, tests), with the same interface."""

    def __init__(self, name: str, vectors: np.ndarray, names: list[str | None] | None = None,
                 path: Path | None = None) -> None:  # fmt: skip
        super().__init__(name, path or Path(name), len(vectors), vectors.shape[1],
                         named=names is not None)  # fmt: skip
        self._vectors, self._names = np.asarray(vectors, dtype=np.float32), names

    def windows(self, max_rows: int = WINDOW_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.num_rows, max_rows):
            yield start, self._vectors[start : start + max_rows]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return self._vectors[ids]

    def names_of(self, ids: list[int]) -> list[str | None]:
        return [self._names[row] if self._names is not None else None for row in ids]

    def _row_of_name(self, name: str) -> int | None:
        return self._names.index(name) if self._names and name in self._names else None


def _vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed_size_list<float32>[dim] column as a (rows, dim) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float32).reshape(-1, dim)  # a writable copy


def open_table(directory: Path, table: str) -> ExportedTable:
    """The export of `table` in `directory`: its npy files if there, else its parquet file."""
    npy = directory / f"{table}.npy"
    if npy.is_file():
        return NpyTable(table, npy)
    path = parquet_file(directory, table)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run tml.projects.twhin.export first")
    return ParquetTable(table, path)
