"""torchrun worker: train a tiny model on fixed global batches under a forced sharding type.

Each rank takes its slice of the same global batches and all ranks share the same negatives, so
the result must equal a one-rank run over the whole batches (TorchRec averages gradients over
ranks, our loss is a per-rank mean). Writes a checkpoint the test reads offline.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist  # noqa: E402

from tml.core.checkpoint import CheckpointManager  # noqa: E402
from tml.core.distributed import init_distributed, shutdown  # noqa: E402
from tml.projects.twhin.batch.layout import SlotLayout  # noqa: E402
from tml.projects.twhin.config import TwhinConfig  # noqa: E402
from tml.projects.twhin.data.builder import EdgeBatchBuilder  # noqa: E402
from tml.projects.twhin.parallel.sharded_model import shard_model  # noqa: E402

GLOBAL_BATCH = 64
STEPS = 6


def train(config: TwhinConfig, save_dir: str) -> None:
    ctx = init_distributed()
    tables = config.model.embeddings.tables
    shape = config.model.graph_shape()
    relations = shape.relation_tables
    local = GLOBAL_BATCH // ctx.world_size
    layout = SlotLayout(shape, batch_size=local, global_negatives=4, in_batch_negatives=0)
    sharded = shard_model(config.model, ctx.device, seed=0, world_size=ctx.world_size,
                          local_size=ctx.local_world_size, lookups_per_step=layout.num_slots)  # fmt: skip
    builder = EdgeBatchBuilder(layout)

    def batches():
        for step in range(STEPS):
            rng = np.random.default_rng([step])
            rel = rng.integers(0, len(relations), GLOBAL_BATCH)
            lhs_size = np.array([tables[relations[r][0]].num_embeddings for r in rel])
            rhs_size = np.array([tables[relations[r][1]].num_embeddings for r in rel])
            lhs = (rng.random(GLOBAL_BATCH) * lhs_size).astype(np.int64)
            rhs = (rng.random(GLOBAL_BATCH) * rhs_size).astype(np.int64)
            mine = slice(ctx.rank * local, (ctx.rank + 1) * local)
            # Negatives from an rng shared by all ranks: the same ids everywhere.
            yield builder.build(lhs[mine], rel[mine], rhs[mine], np.random.default_rng([step, 1]))

    checkpoints = CheckpointManager(save_dir, keep=None, rank=ctx.rank)
    state = {"model": sharded.model.state_dict(), "optim": sharded.optimizer.state_dict()}
    checkpoints.save(0, state, {"step": 0})  # the initial weights, to prove training moved them
    pipeline = TrainPipelineSparseDist(sharded.model, sharded.optimizer, ctx.device)
    stream = batches()
    for step in range(STEPS):
        sharded.set_learning_rates(step)
        pipeline.progress(stream)
    checkpoints.save(STEPS, state, {"step": STEPS})
    del pipeline, sharded, state
    shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--save-dir", required=True)
    args = parser.parse_args()
    train(TwhinConfig.model_validate(yaml.safe_load(open(args.config))), args.save_dir)
