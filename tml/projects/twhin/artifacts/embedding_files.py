"""The exported embedding files: their formats, how they are written and read back.

Under `D/embeddings/`, one set of files per table and format, rows in id order:

* ``parquet``: `<table>.parquet` with `id` (int64), `name` (string, where the graph has a
  vocabulary) and `embedding` (fixed_size_list<float32>[dim]); what training writes at its end.
* ``npy``: `<table>.npy`, a float32 (rows, dim) array (`np.load(path, mmap_mode="r")` maps it
  without reading it), and `<table>.names.txt`, one name per line, line i = id i.
* ``tsv``: `<table>.tsv`, tab-separated vectors, and `<table>.metadata.tsv`, one label (the name,
  else the id) per line: the files TensorBoard's Embedding Projector and projector.tensorflow.org
  load. Tabs and newlines inside names become spaces there.

`relations.parquet` holds each relation's operator parameters as JSON, named like the scorer's
state (`translation`, `reverse.translation`...), so `relation_scorer` can rebuild the scorer.

Writers take row blocks in order and publish their files atomically on `close`, so a table is
written in pieces and a reader never sees half a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tml.core.files import staging_path
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.scorer import EdgeScorer

FORMATS = ("parquet", "npy", "tsv")
RELATIONS_FILE = "relations.parquet"


def parquet_file(directory: Path, table: str) -> Path:
    """A table's parquet export in an export folder (what training writes at its end)."""
    return directory / f"{table}.parquet"


def _text(name: object) -> str:
    return str(name).replace("\t", " ").replace("\n", " ").replace("\r", " ")


class TableWriter:
    """Writes one table in one format from consecutive row blocks; `close` publishes."""

    def __init__(self, directory: Path, table: str, num_rows: int, dim: int, named: bool) -> None:
        self.directory, self.table = directory, table
        self.num_rows, self.dim, self.named = num_rows, dim, named
        self._rows_written = 0

    def write(self, vectors: np.ndarray, names: np.ndarray | None) -> None:
        """Rows [rows written so far, + len(vectors)) as float32; `names` aligned or None."""
        self._write(self._rows_written, vectors, names)
        self._rows_written += len(vectors)

    def close(self) -> list[Path]:
        if self._rows_written != self.num_rows:
            raise RuntimeError(
                f"{self.table}: wrote {self._rows_written} of {self.num_rows} rows; not publishing"
            )
        finished = self._finish()
        for path in finished:
            staging_path(path).replace(path)
        return finished

    def _write(self, start: int, vectors: np.ndarray, names: np.ndarray | None) -> None:
        raise NotImplementedError

    def _finish(self) -> list[Path]:
        """Close the staging files; returns the final paths."""
        raise NotImplementedError


class ParquetTableWriter(TableWriter):
    def __init__(self, directory: Path, table: str, num_rows: int, dim: int, named: bool) -> None:
        super().__init__(directory, table, num_rows, dim, named)
        self.path = parquet_file(directory, table)
        fields = [("id", pa.int64())]
        if named:
            fields.append(("name", pa.string()))
        fields.append(("embedding", pa.list_(pa.float32(), dim)))
        # No dictionary pages: ids, names and float vectors are all unique (twice as fast).
        self._writer = pq.ParquetWriter(
            staging_path(self.path), pa.schema(fields), use_dictionary=False
        )

    def _write(self, start: int, vectors: np.ndarray, names: np.ndarray | None) -> None:
        columns = {"id": pa.array(np.arange(start, start + len(vectors), dtype=np.int64))}
        if self.named:
            columns["name"] = pa.array(names, pa.string())
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        self._writer.write_table(pa.table(columns))

    def _finish(self) -> list[Path]:
        self._writer.close()
        return [self.path]


class NpyTableWriter(TableWriter):
    def __init__(self, directory: Path, table: str, num_rows: int, dim: int, named: bool) -> None:
        super().__init__(directory, table, num_rows, dim, named)
        self.path = directory / f"{table}.npy"
        self.names_path = directory / f"{table}.names.txt"
        # A memory-mapped file: blocks go straight to disk, the table is never held whole.
        self._array = np.lib.format.open_memmap(
            staging_path(self.path), mode="w+", dtype=np.float32, shape=(num_rows, dim)
        )
        self._names: TextIO | None = open(staging_path(self.names_path), "w") if named else None  # noqa: SIM115

    def _write(self, start: int, vectors: np.ndarray, names: np.ndarray | None) -> None:
        self._array[start : start + len(vectors)] = vectors
        if self._names is not None:
            assert names is not None  # a named table gets names with every block
            self._names.writelines(_text("" if n is None else n) + "\n" for n in names)

    def _finish(self) -> list[Path]:
        self._array.flush()
        del self._array
        if self._names is None:
            return [self.path]
        self._names.close()
        return [self.path, self.names_path]


class TsvTableWriter(TableWriter):
    def __init__(self, directory: Path, table: str, num_rows: int, dim: int, named: bool) -> None:
        super().__init__(directory, table, num_rows, dim, named)
        self.path = directory / f"{table}.tsv"
        self.metadata_path = directory / f"{table}.metadata.tsv"
        self._vectors = open(staging_path(self.path), "w")  # noqa: SIM115
        self._labels = open(staging_path(self.metadata_path), "w")  # noqa: SIM115

    def _write(self, start: int, vectors: np.ndarray, names: np.ndarray | None) -> None:
        np.savetxt(self._vectors, vectors, fmt="%.8g", delimiter="\t")
        ids = range(start, start + len(vectors))
        labels = (
            ids
            if names is None
            else (n if n is not None else i for i, n in zip(ids, names, strict=True))
        )
        self._labels.writelines(_text(label) + "\n" for label in labels)

    def _finish(self) -> list[Path]:
        self._vectors.close()
        self._labels.close()
        return [self.path, self.metadata_path]


WRITERS: dict[str, type[TableWriter]] = {
    "parquet": ParquetTableWriter,
    "npy": NpyTableWriter,
    "tsv": TsvTableWriter,
}


@dataclass
class EmbeddingTable:
    """One exported table in memory: row i is entity id i."""

    name: str
    vectors: np.ndarray  # (rows, dim) float32
    names: list[str | None] | None  # entity names, where the graph has a vocabulary

    def label(self, row: int) -> str:
        """The entity's name, or its id as text."""
        name = self.names[row] if self.names is not None else None
        return str(row) if name is None else name

    def find(self, query: str) -> int:
        """The row of an entity given by name or, failing that, by id."""
        if query in self._rows_by_name:
            return self._rows_by_name[query]
        if query.lstrip("-").isdigit() and 0 <= int(query) < len(self.vectors):
            return int(query)
        kind = "a name or an id" if self.names is not None else "an id (it has no names)"
        raise KeyError(
            f"{query!r} is not {kind} of table {self.name!r} (ids 0..{len(self.vectors) - 1})"
        )

    @cached_property
    def _rows_by_name(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names or ()) if n is not None}


def read_table(directory: Path, table: str) -> EmbeddingTable:
    """Read `<table>.parquet` from an export folder."""
    path = parquet_file(directory, table)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run tml.projects.twhin.export first")
    data = pq.read_table(path)
    ids = data.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"{path}: rows are not in id order 0..{len(ids) - 1}")
    column = data.column("embedding").combine_chunks()
    vectors = column.values.to_numpy(zero_copy_only=False, writable=True)
    vectors = vectors.reshape(len(ids), column.type.list_size)
    names = data.column("name").to_pylist() if "name" in data.column_names else None
    return EmbeddingTable(table, vectors, names)


def relation_records(config: TwhinConfig, dense: dict[str, torch.Tensor]) -> list[dict]:
    """Rows of relations.parquet from the scorer's (`scorer.`-prefixed) state."""
    scorer = EdgeScorer(config.model)
    scorer.load_state_dict({key.removeprefix("scorer."): value for key, value in dense.items()})
    return [
        {
            "name": relation.name,
            "lhs": relation.lhs,
            "rhs": relation.rhs,
            "operator": relation.operator,
            "parameters": json.dumps(
                {name: value.tolist() for name, value in scorer.relation_parameters(index).items()}
            ),
        }
        for index, relation in enumerate(config.model.relations)
    ]


@torch.no_grad()
def relation_scorer(config: TwhinConfig, directory: Path) -> EdgeScorer:
    """An EdgeScorer holding the relation parameters of an export's relations.parquet."""
    path = directory / RELATIONS_FILE
    rows = {row["name"]: row for row in pq.read_table(path).to_pylist()}
    scorer = EdgeScorer(config.model)
    for index, relation in enumerate(config.model.relations):
        if relation.name not in rows:
            raise ValueError(f"{path} has no relation {relation.name!r}; re-run the export")
        saved = json.loads(rows[relation.name]["parameters"])
        for name, target in scorer.relation_parameters(index).items():
            value = torch.tensor(saved.get(name, []))
            if value.shape != target.shape:
                raise ValueError(
                    f"{path}: relation {relation.name!r} has no {name} of shape "
                    f"{tuple(target.shape)} (this config's {relation.operator} operator); "
                    "re-run the export"
                )
            target.copy_(value)
    return scorer.eval()
