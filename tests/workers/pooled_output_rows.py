"""torchrun worker: rows of pooled lookup output each rank computes, under each sharding type.

Shards the trainer's model with `shard_model` (every table forced to one sharding type), runs
one batch in the trainer's slot layout through it, and writes OUT_DIR/rank_<r>.json: per type,
the slots S of the batch and the rows of each lookup module's output on this rank, taken before
the output collective (reduce-scatter or all-to-all) sends them on. docs/scaling.md's memory and
traffic arithmetic rests on these being W x S.

    torchrun --nproc_per_node 2 tests/workers/pooled_output_rows.py OUT_DIR TYPE [TYPE ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tml.core.distributed import init_distributed, shutdown  # noqa: E402
from tml.projects.twhin.batch.layout import SlotLayout  # noqa: E402
from tml.projects.twhin.data.builder import EdgeBatchBuilder  # noqa: E402
from tml.projects.twhin.models.config import TwhinModelConfig  # noqa: E402
from tml.projects.twhin.parallel.sharded_model import shard_model  # noqa: E402

TABLES = {"user": 40, "tweet": 60}
RELATIONS = [("follows", "user", "user"), ("fav", "user", "tweet")]


def model_config(sharding_type: str) -> TwhinModelConfig:
    tables = [
        {"name": name, "num_embeddings": rows, "embedding_dim": 8, "sharding_type": sharding_type,
         "optimizer": {"rowwise_adagrad": {"lr": 0.1}}}
        for name, rows in TABLES.items()
    ]  # fmt: skip
    relations = [{"name": n, "lhs": lhs, "rhs": rhs} for n, lhs, rhs in RELATIONS]
    return TwhinModelConfig.model_validate(
        {"embeddings": {"tables": tables}, "relations": relations,
         "translation_optimizer": {"sgd": {"lr": 0.1}}}
    )  # fmt: skip


def slot_layout(config: TwhinModelConfig) -> SlotLayout:
    return SlotLayout(config.graph_shape(), batch_size=8, global_negatives=2, in_batch_negatives=0)


def lookup_rows(sharding_type: str, rank: int, world_size: int, local_size: int) -> list[int]:
    """Rows of each lookup module's output on this rank, for one batch."""
    config = model_config(sharding_type)
    layout = slot_layout(config)
    sharded = shard_model(config, torch.device("cpu"), 0, world_size, local_size,
                          lookups_per_step=layout.num_slots)  # fmt: skip
    rows: list[int] = []
    for module in sharded.model.modules():
        for lookup in getattr(module, "_lookups", []):
            lookup.register_forward_hook(lambda _m, _i, out: rows.append(out.shape[0]))
    builder = EdgeBatchBuilder(layout)
    rng = np.random.default_rng([rank])
    relation = rng.integers(0, len(RELATIONS), layout.batch_size)
    lhs = rng.integers(0, TABLES["user"], layout.batch_size)
    rhs = rng.integers(0, TABLES["user"], layout.batch_size)  # valid in both rhs tables
    with torch.no_grad():
        sharded.model(builder.build(lhs, relation, rhs, rng))
    return rows


def main() -> None:
    ctx = init_distributed()
    out_dir, sharding_types = Path(sys.argv[1]), sys.argv[2:]
    records = [
        {"sharding_type": sharding_type, "rank": ctx.rank, "world_size": ctx.world_size,
         "slots": slot_layout(model_config(sharding_type)).num_slots,
         "rows": lookup_rows(sharding_type, ctx.rank, ctx.world_size, ctx.local_world_size)}
        for sharding_type in sharding_types
    ]  # fmt: skip
    (out_dir / f"rank_{ctx.rank}.json").write_text(json.dumps(records))
    shutdown()


if __name__ == "__main__":
    main()
