"""Checkpoint -> embedding files: every table streamed in row windows into each format, and the
relation parameters, under `<save_dir>/embeddings/` (formats: embedding_files.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tml.core.config import load_config
from tml.core.files import atomic_output
from tml.projects.twhin.artifacts.checkpoints import iter_table_rows, load_dense, resolve_checkpoint
from tml.projects.twhin.artifacts.embedding_files import RELATIONS_FILE, WRITERS, relation_records
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.graph_files import read_names, vocabulary_path
from tml.projects.twhin.models.config import EmbeddingTableConfig

log = logging.getLogger(__name__)


TableRows = Iterable[tuple[int, torch.Tensor]]
"""(first row, rows) blocks of one table, in row order."""


def export_table(
    config: TwhinConfig, rows: TableRows, table: EmbeddingTableConfig, out_dir: Path,
    formats: Sequence[str],
) -> list[Path]:  # fmt: skip
    """Stream one table's row blocks into every requested format."""
    vocabulary = vocabulary_path(config.train_data.data_root, table.name)
    names = read_names(vocabulary, table.num_embeddings) if vocabulary else None
    writers = [
        WRITERS[name](out_dir, table.name, table.num_embeddings, table.embedding_dim,
                      named=names is not None)
        for name in formats
    ]  # fmt: skip
    for start, block_rows in rows:
        block = block_rows.float().numpy()
        block_names = names[start : start + len(block)] if names is not None else None
        for writer in writers:
            writer.write(block, block_names)
    return [path for writer in writers for path in writer.close()]


def export(
    save_dir: str | Path,
    checkpoint: str | None = None,
    formats: Sequence[str] = ("parquet",),
    in_memory: Mapping[str, TableRows] | None = None,
) -> list[Path]:
    """Write the embeddings and relations of `checkpoint` (default newest); returns the files.

    `in_memory`: rows of tables that the caller holds and knows to be the checkpoint's (training
    right after writing it), exported without reading the table back from the checkpoint."""
    in_memory = in_memory or {}
    run = RunDir.at(save_dir)
    config = load_config(TwhinConfig, run.config)
    path = resolve_checkpoint(run, checkpoint)
    out_dir = run.embeddings
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in config.model.embeddings.tables:
        rows = in_memory.get(table.name)
        if rows is None:
            rows = iter_table_rows(path, table)
        written += export_table(config, rows, table, out_dir, formats)
    relations = pa.Table.from_pylist(relation_records(config, load_dense(config, path)))
    target = out_dir / RELATIONS_FILE
    with atomic_output(target) as staging:
        pq.write_table(relations, staging)
    written.append(target)
    names = ", ".join(table.name for table in config.model.embeddings.tables)
    held = [table.name for table in config.model.embeddings.tables if table.name in in_memory]
    note = f" ({', '.join(held)} from memory)" if held else ""
    log.info("exported %s (%s) from %s%s to %s", names, ", ".join(formats), path, note, out_dir)
    return written
