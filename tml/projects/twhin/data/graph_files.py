"""Files a graph's producer leaves beside its edges, found from a run's config.

The KG importer writes ``<out>/vocab/<table>.parquet`` (id, name) and the synthetic generator
``<out>/communities.parquet`` (table, id, community), each next to the ``train/`` folder that the
config's ``train_data.data_root`` points at. Export reads the names (so embeddings carry them) and
the report reads the communities (to colour its projections); neither needs a config field,
because the producer and the trainer already agree on where the edges are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

VOCAB_DIR = "vocab"
COMMUNITIES_FILE = "communities.parquet"


def graph_dir(root: str) -> Path | None:
    """The folder holding a data root's folder (`train_data.data_root`), for local data roots
    (None for URLs and globs)."""
    if "://" in root or any(char in root for char in "*?["):
        return None
    path = Path(root)
    return path.parent if path.is_dir() else path.parent.parent if path.is_file() else None


def vocabulary_path(data_root: str, table: str) -> Path | None:
    """The importer's `vocab/<table>.parquet` beside `data_root`, when there is one."""
    directory = graph_dir(data_root)
    path = directory / VOCAB_DIR / f"{table}.parquet" if directory else None
    return path if path is not None and path.is_file() else None


def read_names(path: Path, num_rows: int) -> np.ndarray:
    """Entity names indexed by id (None where the vocabulary has no entry)."""
    vocab = pq.read_table(path, columns=["id", "name"])
    ids = vocab.column("id").to_numpy()
    if len(ids) and (ids.min() < 0 or ids.max() >= num_rows):
        raise ValueError(
            f"{path}: ids reach {ids.max()} but the table has {num_rows} rows; was the config's "
            "num_embeddings changed after the import?"
        )
    names = np.full(num_rows, None, dtype=object)
    names[ids] = np.asarray(vocab.column("name").to_pylist(), dtype=object)
    return names


def read_communities(data_root: str, tables: dict[str, int]) -> dict[str, np.ndarray]:
    """table -> planted community of each of its rows (`tables`: name -> rows; -1 where
    unknown), from the generator's file beside `data_root`; empty without it."""
    directory = graph_dir(data_root)
    path = directory / COMMUNITIES_FILE if directory else None
    if path is None or not path.is_file():
        return {}
    data = pq.read_table(path).to_pydict()
    table_names = np.asarray(data["table"])
    ids, communities = np.asarray(data["id"]), np.asarray(data["community"])
    labels = {}
    for table, rows in tables.items():
        mine = (table_names == table) & (ids < rows)
        row_labels = np.full(rows, -1, dtype=np.int64)
        row_labels[ids[mine]] = communities[mine]
        labels[table] = row_labels
    return labels
