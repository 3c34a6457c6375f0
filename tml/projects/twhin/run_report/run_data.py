"""What a report shows, read from a save dir: metric series, final values, table samples."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tml.core.config import load_config
from tml.projects.twhin.artifacts.embedding_files import parquet_file
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.graph_files import read_communities

READ_BATCH_ROWS = 65_536


@dataclass
class MetricSeries:
    """metrics.jsonl split by kind of record, one record per step (a resumed run's repeated
    steps keep their latest record)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> MetricSeries:
        by_split: dict[str, dict[int, dict]] = defaultdict(dict)
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    by_split[record.get("split", "train")][record["step"]] = record
        ordered = {split: [r[s] for s in sorted(r)] for split, r in by_split.items()}
        return cls(*(ordered.get(split, []) for split in ("train", "validation", "embeddings")))


@dataclass
class TableSample:
    """One exported table: every row's norm and a sample of rows for the projection."""

    name: str
    norms: np.ndarray  # (rows,)
    rows: np.ndarray  # (n,) sampled ids
    vectors: np.ndarray  # (n, dim)
    labels: np.ndarray | None  # (n,) planted community of each sampled row, where known


def sample_table(
    path: Path, sample: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(norms of all rows, sampled ids, their vectors), streaming the parquet in batches."""
    parquet = pq.ParquetFile(path)
    total = parquet.metadata.num_rows
    chosen = np.sort(np.random.default_rng(seed).choice(total, min(sample, total), replace=False))
    norms, picked = [], []
    start = 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=["embedding"]):
        column = batch.column(0)
        block = column.values.to_numpy().reshape(len(batch), column.type.list_size)
        norms.append(np.linalg.norm(block, axis=1))
        inside = chosen[(chosen >= start) & (chosen < start + len(block))]
        picked.append(block[inside - start])
        start += len(block)
    return np.concatenate(norms), chosen, np.concatenate(picked)


@dataclass
class RunData:
    """Everything the plots and the page need."""

    save_dir: Path
    config: TwhinConfig
    config_text: str
    metrics: MetricSeries
    tables: list[TableSample]
    evaluations: dict[str, dict[str, Any]]  # split -> eval/<split>.json

    @classmethod
    def read(cls, save_dir: Path, sample: int) -> RunData:
        run = RunDir(save_dir)
        config = load_config(TwhinConfig, run.config)
        communities = read_communities(
            config.train_data.data_root,
            {table.name: table.num_embeddings for table in config.model.embeddings.tables},
        )
        tables = []
        for table in config.model.embeddings.tables:
            path = parquet_file(run.embeddings, table.name)
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist; run tml.projects.twhin.export")
            norms, rows, vectors = sample_table(path, sample)
            labels = communities[table.name][rows] if table.name in communities else None
            tables.append(TableSample(table.name, norms, rows, vectors, labels))
        evaluations = {
            path.stem: json.loads(path.read_text())
            for path in sorted(run.evaluations.glob("*.json"))
        }
        return cls(
            save_dir, config, run.config.read_text(), MetricSeries.read(run.metrics),
            tables, evaluations,
        )  # fmt: skip
