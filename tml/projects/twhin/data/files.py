"""The edge files: parquet with integer columns lhs, rel, rhs. Their schema, how a data_root
names them, how they are opened, and how edges are written (by the synthetic generator and the
knowledge-graph importer alike)."""

from __future__ import annotations

import glob as globlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ("lhs", "rel", "rhs")
EDGE_SCHEMA = pa.schema([(name, pa.int64()) for name in COLUMNS])
PARQUET_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": True}
"""How the producers write parquet (edges and the files beside them)."""


class DataError(ValueError):
    """Edges that cannot be trained on; the message names the file, row group or row."""


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


class EdgeFiles:
    """The sorted parquet files of one data_root, opened on demand and kept a few at a time
    (planning touches every file once, reading revisits them)."""

    def __init__(self, data_root: str) -> None:
        self.fs, self.paths = list_parquet_files(data_root)
        self.open = lru_cache(maxsize=8)(self._open)

    def __len__(self) -> int:
        return len(self.paths)

    def _open(self, index: int) -> pq.ParquetFile:
        path = self.paths[index]
        try:
            return pq.ParquetFile(self.fs.open(path, "rb"))
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path}: cannot read as parquet: {exc}") from None

    def check_schema(self, index: int) -> None:
        """The file has integer columns lhs, rel and rhs, or DataError naming it."""
        path, schema = self.paths[index], self.open(index).schema_arrow
        for column in COLUMNS:
            if column not in schema.names:
                raise DataError(
                    f"{path}: missing column {column!r} (edges need int columns lhs, rel, rhs; "
                    f"found {', '.join(schema.names)})"
                )
            kind = schema.field(column).type
            if not pa.types.is_integer(kind):
                raise DataError(f"{path}: column {column!r} has type {kind}, expected integers")


class EdgeFileWriter:
    """Edges into `part-NNNNN.parquet` files of `rows_per_file` rows in row groups of
    `row_group_size`, cut by edge count (never by how the edges arrive), so the same edges
    always give the same bytes; at most one row group is buffered."""

    def __init__(self, directory: Path, rows_per_file: int, row_group_size: int) -> None:
        self.directory = directory
        self.rows_per_file = rows_per_file
        self.row_group_size = row_group_size
        self.num_rows = 0
        self._num_files = 0
        self._rows_in_file = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        directory.mkdir()

    def append(self, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> None:
        """Queue edges, writing each row group as it fills."""
        start = 0
        while start < len(lhs):
            take = min(len(lhs) - start, self._group_limit() - self._buffered)
            stop = start + take
            self._buffer.append((lhs[start:stop], rel[start:stop], rhs[start:stop]))
            self._buffered += take
            start = stop
            if self._buffered == self._group_limit():
                self._write_row_group()

    def close(self) -> None:
        """Write what is left; an empty split still gets one (empty) file with the schema."""
        if self._buffered or self._num_files == 0:
            self._write_row_group()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _group_limit(self) -> int:
        """Rows of the row group being filled: a full group, or what is left of the file."""
        return min(self.row_group_size, self.rows_per_file - self._rows_in_file)

    def _write_row_group(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        arrays = [
            pa.array(np.concatenate([empty] + [part[i] for part in self._buffer]), pa.int64())
            for i in range(3)
        ]
        if self._writer is None:
            path = self.directory / f"part-{self._num_files:05d}.parquet"
            self._writer = pq.ParquetWriter(path, EDGE_SCHEMA, **PARQUET_OPTIONS)
            self._num_files += 1
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=EDGE_SCHEMA))
        self.num_rows += self._buffered
        self._rows_in_file += self._buffered
        self._buffer, self._buffered = [], 0
        if self._rows_in_file >= self.rows_per_file:
            self._writer.close()
            self._writer = None
            self._rows_in_file = 0
