"""Parquet output: edges (through the shared edge writer), vocabularies and relations.

Everything is written into a staging directory that the importer publishes whole, so a reader
never sees a partial import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.projects.twhin.data.files import PARQUET_OPTIONS, EdgeFileWriter
from tml.projects.twhin.tools.import_kg.vocabulary import Vocabulary

ROW_GROUP_SIZE = 65_536
"""Edges per parquet row group: the trainer shuffles row groups, so smaller mixes better."""
ROWS_PER_FILE = 64 * ROW_GROUP_SIZE

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


def edge_writer(directory: Path) -> EdgeFileWriter:
    """The writer of one split's edges (reads the constants above at call time)."""
    return EdgeFileWriter(directory, ROWS_PER_FILE, ROW_GROUP_SIZE)


def write_vocabularies(directory: Path, vocabulary: Vocabulary) -> None:
    directory.mkdir()
    for table, names in vocabulary.tables.items():
        ids = pa.array(np.arange(len(names), dtype=np.int64))
        table_data = pa.Table.from_arrays(
            [ids, pa.array(list(names), pa.string())], schema=VOCAB_SCHEMA
        )
        pq.write_table(table_data, directory / f"{table}.parquet", **PARQUET_OPTIONS)


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
    pq.write_table(pa.Table.from_arrays(arrays, schema=RELATION_SCHEMA), path, **PARQUET_OPTIONS)
