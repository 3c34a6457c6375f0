"""Export trained embeddings from a checkpoint, offline (no process group).

    python -m tml.projects.twhin.export --save_dir D [--checkpoint step_N]
        [--format parquet|npy|tsv[,...]]

writes `D/embeddings/<table>.<format>` (formats and columns: embedding_files.py), with entity
names where the graph has an importer vocabulary, and `D/embeddings/relations.parquet` (name,
lhs, rhs, operator, parameters as JSON). It reads the sharded checkpoint of any world size.

Tables larger than memory: a table is read in row windows of at most `ROWS_PER_READ` rows, cut at
the row boundaries of the saved shards, and each window goes to the writers before the next is
read. DCP's resharding reads exactly the saved pieces that overlap a window (`_RowWindowPlanner`
describes the window as a chunk at its row offset). Its file reader deserialises a saved shard
whole before copying the rows out, so memory peaks at one saved shard plus one window: a
row-wise table of R shards never needs more than ~1/R of it, and a table-wise one (a single
shard) is held once, never twice, at the price of re-reading it for each window.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from tml.core import safe_dcp
from tml.core.checkpoint import complete_checkpoints, is_complete
from tml.core.config import ConfigError, load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.graph_files import read_names, vocabulary_path
from tml.projects.twhin.embedding_files import FORMATS, RELATIONS_FILE, WRITERS, relation_records
from tml.projects.twhin.models.config import EmbeddingTableConfig
from tml.projects.twhin.models.scorer import EdgeScorer

log = logging.getLogger(__name__)

CONFIG_COPY = "config.yaml"
ROWS_PER_READ = 1 << 20
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def resolve_checkpoint(save_dir: Path, checkpoint: str | None) -> Path:
    """The named checkpoint (`step_N` or a path), or the newest complete one."""
    if checkpoint:
        path = Path(checkpoint) if "/" in checkpoint else save_dir / "checkpoints" / checkpoint
        if not is_complete(path):
            raise FileNotFoundError(f"checkpoint {path} does not exist or is incomplete")
        return path
    found = complete_checkpoints(save_dir / "checkpoints")
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {save_dir / 'checkpoints'}")
    return found[-1]


def _table_key(table: str) -> str:
    """The checkpoint key of a table's weight (the trainer saves the model under "model")."""
    return f"model.tables.embedding_bags.{table}.weight"


def load_dense(config: TwhinConfig, checkpoint: Path) -> dict[str, torch.Tensor]:
    """The relation operators' parameters, `scorer.`-prefixed as in the model's state."""
    dense = {f"scorer.{k}": v for k, v in EdgeScorer(config.model).state_dict().items()}
    safe_dcp.load({"model": dense}, checkpoint, no_dist=True)
    return dense


def load_tables(
    config: TwhinConfig, checkpoint: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Full tables (all in memory, for evaluation) and the dense parameters."""
    tables = {
        table.name: torch.empty(
            table.num_embeddings, table.embedding_dim, dtype=_TORCH_DTYPES[table.data_type.value]
        )
        for table in config.model.embeddings.tables
    }
    safe_dcp.load({_table_key(name): t for name, t in tables.items()}, checkpoint, no_dist=True)
    return tables, load_dense(config, checkpoint)


class _RowWindowPlanner(DefaultLoadPlanner):
    """Loads rows [start, start + len(window)) of one saved 2-D tensor into `window`.

    The default planner insists that the destination has the saved tensor's full size; this one
    presents the window as a chunk at row `start` and lets DCP's resharding find the overlaps.
    """

    def __init__(self, key: str, start: int, window: torch.Tensor) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._key, self._start, self._window = key, start, window

    def create_local_plan(self) -> LoadPlan:
        chunk = ChunkStorageMetadata(
            offsets=torch.Size([self._start, 0]), sizes=self._window.size()
        )
        saved = self.metadata.state_dict_metadata[self._key]
        return LoadPlan(create_read_items_for_chunk_list(self._key, saved, [chunk]))

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self._window


def row_windows(metadata: Metadata, key: str, num_rows: int, max_rows: int) -> list[range]:
    """Row ranges of at most `max_rows` that never straddle a saved shard's row boundary."""
    chunks = metadata.state_dict_metadata[key].chunks
    bounds = sorted(
        {0, num_rows}
        | {chunk.offsets[0] for chunk in chunks}
        | {chunk.offsets[0] + chunk.sizes[0] for chunk in chunks}
    )
    return [
        range(start, min(start + max_rows, stop))
        for low, stop in itertools.pairwise(bounds)
        for start in range(low, stop, max_rows)
    ]


def iter_table_rows(
    checkpoint: Path, table: EmbeddingTableConfig, max_rows: int = ROWS_PER_READ
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows) of a table, window by window, in row order."""
    key = _table_key(table.name)
    metadata = safe_dcp.read_metadata(checkpoint)
    if key not in metadata.state_dict_metadata:
        raise FileNotFoundError(f"checkpoint {checkpoint} has no table {table.name!r}")
    dtype = _TORCH_DTYPES[table.data_type.value]
    for rows in row_windows(metadata, key, table.num_embeddings, max_rows):
        window = torch.empty(len(rows), table.embedding_dim, dtype=dtype)
        safe_dcp.load({key: window}, checkpoint, no_dist=True,
                      planner=_RowWindowPlanner(key, rows.start, window))  # fmt: skip
        yield rows.start, window


def export_table(
    config: TwhinConfig, checkpoint: Path, table: EmbeddingTableConfig, out_dir: Path,
    formats: Sequence[str],
) -> list[Path]:  # fmt: skip
    """Stream one table from the checkpoint into every requested format."""
    vocabulary = vocabulary_path(config, table.name)
    names = read_names(vocabulary, table.num_embeddings) if vocabulary else None
    writers = [
        WRITERS[name](out_dir, table.name, table.num_embeddings, table.embedding_dim,
                      named=names is not None)
        for name in formats
    ]  # fmt: skip
    for start, rows in iter_table_rows(checkpoint, table):
        block = rows.float().numpy()
        block_names = names[start : start + len(block)] if names is not None else None
        for writer in writers:
            writer.write(block, block_names)
    return [path for writer in writers for path in writer.close()]


def export(
    save_dir: str | Path, checkpoint: str | None = None, formats: Sequence[str] = ("parquet",)
) -> list[Path]:
    """Write the embeddings and relations of `checkpoint` (default newest); returns the files."""
    save_dir = Path(save_dir)
    config = load_config(TwhinConfig, save_dir / CONFIG_COPY)
    path = resolve_checkpoint(save_dir, checkpoint)
    out_dir = save_dir / "embeddings"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in config.model.embeddings.tables:
        written += export_table(config, path, table, out_dir, formats)
    relations = pa.Table.from_pylist(relation_records(config, load_dense(config, path)))
    target = out_dir / RELATIONS_FILE
    staging = target.with_name(f".{target.name}.tmp")
    pq.write_table(relations, staging)
    staging.replace(target)
    written.append(target)
    names = ", ".join(table.name for table in config.model.embeddings.tables)
    log.info("exported %s (%s) from %s to %s", names, ", ".join(formats), path, out_dir)
    return written


def _formats(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or text!r}; choose from {', '.join(FORMATS)}"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--checkpoint", default=None, help="step_N under save_dir/checkpoints, or a path."
    )
    parser.add_argument(
        "--format", type=_formats, default=["parquet"],
        help=f"One or more of {', '.join(FORMATS)}, comma-separated (default: parquet).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        files = export(args.save_dir, args.checkpoint, args.format)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for file in files:
        print(file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
