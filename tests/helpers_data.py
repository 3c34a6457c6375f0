"""Small real parquet edge sets and configs for the data-reader tests, plus batch decoding.

The edges are built so that `lhs` is the edge's row in the global order (files sorted by path,
then rows), which makes every positive in a batch identify its source row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset, make_dataset

TABLES: dict[str, int] = {"user": 1000, "tweet": 100, "ad": 50}
TABLE_NAMES = list(TABLES)
# (name, lhs table, rhs table); the data's `rel` indexes this list.
RELATIONS: list[tuple[str, str, str]] = [
    ("follows", "user", "user"),
    ("fav", "user", "tweet"),
    ("click", "user", "ad"),
    ("authored_by", "tweet", "user"),
]
ROW_GROUP_SIZE = 10
# Written in this (unsorted) order; the global order sorts them by path: a, b, c.
DEFAULT_FILES: dict[str, int] = {"part-b.parquet": 40, "part-c.parquet": 27, "part-a.parquet": 30}


def relation_tables(relation: int) -> tuple[int, int]:
    """(lhs table index, rhs table index) of a relation."""
    _, lhs, rhs = RELATIONS[relation]
    return TABLE_NAMES.index(lhs), TABLE_NAMES.index(rhs)


def make_edges(count: int) -> np.ndarray:
    """`count` valid edges (lhs, rel, rhs) whose lhs is their index; lhs < 100 fits every table
    that is a relation's lhs."""
    assert count <= TABLES["tweet"], "lhs must stay a valid tweet id for authored_by"
    index = np.arange(count, dtype=np.int64)
    rel = (index * 3 + index // 5) % len(RELATIONS)
    rhs_size = np.asarray([TABLES[RELATIONS[r][2]] for r in rel], dtype=np.int64)
    rhs = (index * 7 + 3) % rhs_size
    return np.stack([index, rel, rhs], axis=1)


def write_parquet(
    path: Path,
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    row_group_size: int = ROW_GROUP_SIZE,
    types: Mapping[str, pa.DataType] | None = None,
) -> Path:
    """Write the given columns (default type int64) as one parquet file."""
    types = types or {}
    table = pa.table(
        {
            name: pa.array(list(values), type=types.get(name, pa.int64()))
            for name, values in columns.items()
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_edges(path: Path, edges: np.ndarray, *, row_group_size: int = ROW_GROUP_SIZE) -> Path:
    return write_parquet(
        path,
        {"lhs": edges[:, 0], "rel": edges[:, 1], "rhs": edges[:, 2]},
        row_group_size=row_group_size,
    )


def write_dataset(root: Path, files: Mapping[str, int] = DEFAULT_FILES) -> np.ndarray:
    """Write files of the given row counts under `root`; return all edges in global order."""
    total = sum(files.values())
    edges = make_edges(total)
    cursor = 0
    slices = {}
    for name in sorted(files):
        slices[name] = edges[cursor : cursor + files[name]]
        cursor += files[name]
    for name in files:  # creation order differs from the sorted order on purpose
        write_edges(root / name, slices[name])
    return edges


def config_dict(data_root: str | Path, **data: Any) -> dict[str, Any]:
    """A minimal valid config as a mapping; `data` overrides train_data fields."""
    sgd = {"sgd": {"lr": 0.1}}
    train = {
        "data_root": str(data_root),
        "per_replica_batch_size": 8,
        "global_negatives": 3,
        "in_batch_negatives": 2,
        "shuffle_buffer_edges": 20,
    }
    train.update(data)
    return {
        "training": {"seed": 0},
        "model": {
            "translation_optimizer": sgd,
            "embeddings": {
                "tables": [
                    {"name": name, "num_embeddings": size, "embedding_dim": 4, "optimizer": sgd}
                    for name, size in TABLES.items()
                ]
            },
            "relations": [{"name": n, "lhs": lhs, "rhs": rhs} for n, lhs, rhs in RELATIONS],
        },
        "train_data": train,
    }


def make_config(data_root: str | Path, *, seed: int = 0, **data: Any) -> TwhinConfig:
    raw = config_dict(data_root, **data)
    raw["training"]["seed"] = seed
    return TwhinConfig.model_validate(raw)


def dataset(
    config: TwhinConfig, *, rank: int = 0, world_size: int = 1, shuffle: bool = True
) -> EdgeDataset:
    return make_dataset(
        config.model.graph_shape(), config.train_data, "train_data", rank=rank,
        world_size=world_size, seed=config.training.seed, shuffle=shuffle,
    )  # fmt: skip


def decode_slots(batch: EdgeBatch) -> tuple[np.ndarray, np.ndarray]:
    """(table index, id) of every slot, read back from the KeyedJaggedTensor.

    Asserts the layout invariant along the way: each slot is one lookup in exactly one table.
    """
    kjt = batch.lookups
    num_slots = kjt.stride()
    slot_table = np.full(num_slots, -1, dtype=np.int64)
    slot_id = np.full(num_slots, -1, dtype=np.int64)
    for index, name in enumerate(kjt.keys()):
        jagged = kjt[name]
        lengths = jagged.lengths().numpy()
        values = jagged.values().numpy()
        assert len(lengths) == num_slots
        assert set(np.unique(lengths)) <= {0, 1}, f"table {name} has a bag of size > 1"
        slots = np.flatnonzero(lengths)
        assert len(slots) == len(values)
        assert (slot_table[slots] == -1).all(), f"table {name} reuses a slot of another table"
        slot_table[slots] = index
        slot_id[slots] = values
    assert (slot_table >= 0).all(), "a slot has no lookup in any table"
    return slot_table, slot_id


def real_edges(batch: EdgeBatch) -> np.ndarray:
    """The weight-1 positives of a batch as (lhs, rel, rhs) rows, in batch order."""
    size = len(batch.weight)
    _, slot_id = decode_slots(batch)
    real = batch.weight.numpy() == 1.0
    lhs, rhs = slot_id[:size], slot_id[size : 2 * size]
    return np.stack([lhs[real], batch.relation.numpy()[real], rhs[real]], axis=1)


def as_batched(edges: np.ndarray, batch_size: int) -> np.ndarray:
    """`edges` (in reading order) as a one-rank epoch yields them: within each batch of
    `batch_size`, grouped by relation with their order kept (the batch builder's layout when,
    as in `config_dict`, every relation is a scoring group of its own)."""
    parts = [
        part[np.argsort(part[:, 1], kind="stable")]
        for part in np.split(edges, range(batch_size, len(edges), batch_size))
    ]
    return np.concatenate(parts) if parts else edges


def epoch_edges(ds: EdgeDataset, epoch: int = 0) -> np.ndarray:
    """All real positives of one epoch on one rank, in order."""
    parts = [real_edges(batch) for batch in ds.batches(epoch)]
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)


def batch_tensors(batch: EdgeBatch) -> dict[str, torch.Tensor]:
    """Every tensor of a batch, for exact comparisons."""
    return {
        "keys": batch.lookups.keys(),
        "values": batch.lookups.values(),
        "lengths": batch.lookups.lengths(),
        "relation": batch.relation,
        "weight": batch.weight,
        "split_sizes": torch.tensor(batch.pieces.split_sizes),
    }


def assert_same_batches(actual: list[EdgeBatch], expected: list[EdgeBatch]) -> None:
    assert len(actual) == len(expected)
    for step, (a, b) in enumerate(zip(actual, expected, strict=True)):
        ta, tb = batch_tensors(a), batch_tensors(b)
        assert ta["keys"] == tb["keys"], f"step {step}: keys differ"
        for name in ta:
            if name != "keys":
                assert torch.equal(ta[name], tb[name]), f"step {step}: {name} differs"


def write_group_graph(out: Path) -> None:
    """A small learnable knowledge graph as name TSVs `out/{train,valid,test}.tsv`: 50 people in
    5 groups of 10; relation r links a person of group g to a random person of group
    (g + r) mod 5. Random ranking over 50 entities gives an MRR near 0.09."""
    rng = np.random.default_rng(0)
    heads = rng.integers(0, 50, 1200)
    rels = rng.integers(0, 3, 1200)
    tails = ((heads // 10 + rels) % 5) * 10 + rng.integers(0, 10, 1200)
    rows = np.unique(np.stack([heads, rels, tails], 1), axis=0)
    rows = rows[rng.permutation(len(rows))]
    out.mkdir(parents=True, exist_ok=True)
    for name, part in {"train": rows[:-100], "valid": rows[-100:-50], "test": rows[-50:]}.items():
        (out / f"{name}.tsv").write_text(
            "".join(f"person{h}\tknows_{r}\tperson{t}\n" for h, r, t in part)
        )
