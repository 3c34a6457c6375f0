"""Parquet output (edges, vocabularies, relations) and publishing the finished directory.

Everything is written to a temporary directory first; `publish` renames it into place, so a
reader never sees a partial import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.projects.twhin.data.synthetic import OutputExistsError
from tml.projects.twhin.import_kg.vocabulary import Vocabulary

ROW_GROUP_SIZE = 65_536
"""Edges per parquet row group: the trainer shuffles row groups, so smaller mixes better."""
ROWS_PER_FILE = 64 * ROW_GROUP_SIZE

EDGE_SCHEMA = pa.schema([("lhs", pa.int64()), ("rel", pa.int64()), ("rhs", pa.int64())])
VOCAB_SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
RELATION_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("lhs", pa.string()),
        ("rhs", pa.string()),
        ("count", pa.int64()),
    ]
)
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": True}


class EdgeWriter:
    """Edges into ``part-NNNNN.parquet`` files of fixed-size row groups.

    Row groups and files are cut by edge count, never by input block, so the bytes written do not
    depend on how the text was chunked; at most one row group is buffered.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.num_rows = 0
        self._num_files = 0
        self._rows_in_file = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        directory.mkdir()

    def append(self, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> None:
        start = 0
        while start < len(lhs):
            take = min(len(lhs) - start, ROW_GROUP_SIZE - self._buffered)
            stop = start + take
            self._buffer.append((lhs[start:stop], rel[start:stop], rhs[start:stop]))
            self._buffered += take
            start = stop
            if self._buffered == ROW_GROUP_SIZE:
                self._write_row_group()

    def close(self) -> None:
        """Write what is left; an empty split still gets one (empty) file with the schema."""
        if self._buffered or self._num_files == 0:
            self._write_row_group()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_row_group(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        arrays = [
            pa.array(np.concatenate([empty] + [part[i] for part in self._buffer]), pa.int64())
            for i in range(3)
        ]
        if self._writer is None:
            path = self.directory / f"part-{self._num_files:05d}.parquet"
            self._writer = pq.ParquetWriter(path, EDGE_SCHEMA, **_PARQUET_OPTIONS)
            self._num_files += 1
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=EDGE_SCHEMA))
        self.num_rows += self._buffered
        self._rows_in_file += self._buffered
        self._buffer, self._buffered = [], 0
        if self._rows_in_file >= ROWS_PER_FILE:
            self._writer.close()
            self._writer = None
            self._rows_in_file = 0


def write_vocabularies(directory: Path, vocabulary: Vocabulary) -> None:
    directory.mkdir()
    for table, names in vocabulary.tables.items():
        ids = pa.array(np.arange(len(names), dtype=np.int64))
        table_data = pa.Table.from_arrays(
            [ids, pa.array(list(names), pa.string())], schema=VOCAB_SCHEMA
        )
        pq.write_table(table_data, directory / f"{table}.parquet", **_PARQUET_OPTIONS)


def write_relations(path: Path, vocabulary: Vocabulary) -> None:
    tables = list(vocabulary.tables)
    infos = vocabulary.relation_info
    arrays = [
        pa.array(range(len(infos)), pa.int64()),
        pa.array([info.name for info in infos], pa.string()),
        pa.array([tables[info.lhs] for info in infos], pa.string()),
        pa.array([tables[info.rhs] for info in infos], pa.string()),
        pa.array([info.count for info in infos], pa.int64()),
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=RELATION_SCHEMA), path, **_PARQUET_OPTIONS)


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output directory {out} is not empty; pass --overwrite to replace it"
            )


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished directory into place so readers never see a partial import."""
    check_out_dir(out, overwrite)
    if out.is_dir():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, trash / "old")
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)
