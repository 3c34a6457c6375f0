"""Export trained embeddings from a checkpoint to parquet, offline (no process group).

    python -m tml.projects.twhin.export --save_dir D [--checkpoint step_N]

writes `D/embeddings/<table>.parquet` (id int64, embedding fixed_size_list<float32>) and
`D/embeddings/relations.parquet` (name, lhs, rhs, operator, parameters as JSON; a reverse
operator's parameters, with reciprocal relations, are prefixed `reverse.`). It reads the
sharded checkpoint of any world size: DCP assembles full tables from the shards.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed.checkpoint as dcp

from tml.core.checkpoint import complete_checkpoints, is_complete
from tml.core.config import ConfigError, load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.model import EdgeScorer

log = logging.getLogger(__name__)

CONFIG_COPY = "config.yaml"
ROWS_PER_WRITE = 1 << 20
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


def load_tables(
    config: TwhinConfig, checkpoint: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Full tables and dense (relation operator) parameters from a sharded checkpoint."""
    tables = {
        table.name: torch.empty(
            table.num_embeddings, table.embedding_dim, dtype=_TORCH_DTYPES[table.data_type.value]
        )
        for table in config.model.embeddings.tables
    }
    dense = {f"scorer.{k}": v for k, v in EdgeScorer(config.model).state_dict().items()}
    model_state = {f"tables.embedding_bags.{name}.weight": t for name, t in tables.items()}
    model_state.update(dense)
    dcp.load({"model": model_state}, checkpoint_id=str(checkpoint), no_dist=True)
    return tables, dense


def _write_atomically(path: Path, schema: pa.Schema, chunks: Iterable[pa.Table]) -> None:
    """Write parquet under a temporary name and rename, so readers never see half a file."""
    staging = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(staging, schema) as writer:
        for chunk in chunks:
            writer.write_table(chunk)
    staging.replace(path)


def _embedding_chunks(weights: torch.Tensor) -> Iterator[pa.Table]:
    dim = weights.shape[1]
    for start in range(0, weights.shape[0], ROWS_PER_WRITE):
        block = weights[start : start + ROWS_PER_WRITE].float().numpy()
        ids = pa.array(range(start, start + len(block)), pa.int64())
        values = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
        yield pa.table({"id": ids, "embedding": values})


def export(save_dir: str | Path, checkpoint: str | None = None) -> list[Path]:
    """Write the embeddings and relations of `checkpoint` (default newest); returns the files."""
    save_dir = Path(save_dir)
    config = load_config(TwhinConfig, save_dir / CONFIG_COPY)
    path = resolve_checkpoint(save_dir, checkpoint)
    tables, dense = load_tables(config, path)
    out_dir = save_dir / "embeddings"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, weights in tables.items():
        schema = pa.schema(
            [("id", pa.int64()), ("embedding", pa.list_(pa.float32(), weights.shape[1]))]
        )
        target = out_dir / f"{name}.parquet"
        _write_atomically(target, schema, _embedding_chunks(weights))
        written.append(target)
    relations = []
    for index, relation in enumerate(config.model.relations):
        parameters = {}
        for kind, label in (("operators", ""), ("reverse_operators", "reverse.")):
            prefix = f"scorer.{kind}.{index}."
            for key, value in dense.items():
                if key.startswith(prefix):
                    parameters[label + key.removeprefix(prefix)] = value.tolist()
        relations.append(
            {
                "name": relation.name,
                "lhs": relation.lhs,
                "rhs": relation.rhs,
                "operator": relation.operator,
                "parameters": json.dumps(parameters),
            }
        )
    target = out_dir / "relations.parquet"
    relations_table = pa.Table.from_pylist(relations)
    _write_atomically(target, relations_table.schema, [relations_table])
    written.append(target)
    log.info("exported %s from %s to %s", ", ".join(tables), path, out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--save_dir", required=True, help="The run's save dir.")
    parser.add_argument(
        "--checkpoint", default=None, help="step_N under save_dir/checkpoints, or a path."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        files = export(args.save_dir, args.checkpoint)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for file in files:
        print(file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
