"""torchrun worker: filtered ranking over a sharded model, for every comparator and reciprocal
and filtered setting, with one table per sharding type (row_wise, table_wise, column_wise).

Every rank ranks the same edges against its own shards (`ShardedRows`), then against its share of
the checkpoint it just wrote (`CheckpointRows`); rank 0 writes the metrics as JSON. The test
ranks the same edges on one process from the checkpoint's whole tables and compares.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tml.core.checkpoint import CheckpointManager  # noqa: E402
from tml.core.distributed import init_distributed, shutdown  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.eval.ranking import KnownEdges  # noqa: E402
from tml.projects.twhin.eval.row_sources import CheckpointRows, ShardedRows, table_shapes  # noqa: E402
from tml.projects.twhin.eval.sharded_ranking import rank_edges  # noqa: E402
from tml.projects.twhin.models.scorer import EdgeScorer  # noqa: E402
from tml.projects.twhin.parallel.sharded_model import shard_model  # noqa: E402

# TorchRec cuts column_wise shards at least 128 columns wide: dim 256 makes two of them.
TABLES = {"rows": ("row_wise", 40), "whole": ("table_wise", 30), "columns": ("column_wise", 36)}
DIM = 256
RELATIONS = [  # every table is a candidate table on both sides; operators that mix columns too
    ("rows", "whole", "translation"),
    ("whole", "columns", "complex_diagonal"),
    ("columns", "rows", "linear"),
    ("columns", "columns", "diagonal"),
]
COMPARATORS = ("dot", "cos", "l2", "l1")


def config_for(comparator: str = "dot", reciprocal: bool = False) -> TwhinConfig:
    return TwhinConfig.model_validate({
        "model": {
            "translation_optimizer": {"sgd": {"lr": 0.1}},
            "comparator": comparator,
            "reciprocal_relations": reciprocal,
            "embeddings": {"tables": [
                {"name": name, "num_embeddings": rows, "embedding_dim": DIM,
                 "sharding_type": sharding, "optimizer": {"sgd": {"lr": 0.1}}}
                for name, (sharding, rows) in TABLES.items()
            ]},
            "relations": [{"name": f"r{i}", "lhs": lhs, "rhs": rhs, "operator": operator}
                          for i, (lhs, rhs, operator) in enumerate(RELATIONS)],
        },
        "train_data": {"data_root": "unused", "per_replica_batch_size": 8,
                       "global_negatives": 1, "in_batch_negatives": 0},
    })  # fmt: skip


def scorer_for(comparator: str, reciprocal: bool) -> EdgeScorer:
    """Relation parameters moved away from their identity-like start, the same on every rank."""
    scorer = EdgeScorer(config_for(comparator, reciprocal).model)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter += 0.05 * torch.randn(parameter.shape, generator=generator)
    return scorer.eval()


def edges() -> tuple[np.ndarray, np.ndarray]:
    """(evaluated edges, every known edge): random, with repeated queries so filtering bites."""
    rng = np.random.default_rng(0)
    rows = {name: size for name, (_, size) in TABLES.items()}
    relation = rng.integers(0, len(RELATIONS), 400)
    lhs = np.array([rng.integers(0, min(rows[RELATIONS[r][0]], 6)) for r in relation])
    rhs = np.array([rng.integers(0, rows[RELATIONS[r][1]]) for r in relation])
    known = np.stack([lhs, relation, rhs], 1)
    return known[:90], known


def cases() -> list[dict[str, Any]]:
    return [{"comparator": c, "reciprocal": r, "filtered": f}
            for c in COMPARATORS for r in (False, True) for f in (False, True)]  # fmt: skip


def rank_all(source: Any, relations: list[tuple[str, str]]) -> list[dict[str, Any]]:
    evaluated, known = edges()
    results = []
    for case in cases():
        metrics = rank_edges(
            source, scorer_for(case["comparator"], case["reciprocal"]), relations, evaluated,
            KnownEdges(known) if case["filtered"] else None, auc_negatives=20, seed=3,
        )  # fmt: skip
        results.append({**case, **metrics})
    return results


def main(save_dir: str, out: str) -> None:
    ctx = init_distributed()
    config = config_for()
    sharded = shard_model(config.model, ctx.device, seed=0, world_size=ctx.world_size,
                          local_size=ctx.local_world_size, lookups_per_step=64)  # fmt: skip
    relations = [(lhs, rhs) for lhs, rhs, _ in RELATIONS]
    source = ShardedRows(sharded.model, config.model, ctx.rank, ctx.world_size, ctx.device)
    layout = {
        table: {"splits_columns": source.splits_columns(table),
                "pieces": [(r, c, tuple(b.shape)) for r, c, b in source.pieces(table)]}
        for table in table_shapes(config.model)
    }  # fmt: skip
    from_shards = rank_all(source, relations)
    checkpoints = CheckpointManager(save_dir, keep=None, rank=ctx.rank)
    checkpoints.save(0, {"model": sharded.model.state_dict()}, {"step": 0})
    streamed = CheckpointRows(checkpoints.directory / "step_0", config.model, ctx.rank,
                              ctx.world_size, window_rows=16)  # fmt: skip
    from_checkpoint = rank_all(streamed, relations)
    layouts = [None] * ctx.world_size
    torch.distributed.all_gather_object(layouts, layout)
    if ctx.rank == 0:
        with open(out, "w") as file:
            json.dump({"shards": from_shards, "checkpoint": from_checkpoint, "plan": sharded.plan,
                       "layouts": layouts}, file)  # fmt: skip
    del sharded, source
    shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    main(args.save_dir, args.out)
