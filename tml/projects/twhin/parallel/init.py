"""Deterministic initialisation of the sharded tables, whatever the plan or the world size."""

from __future__ import annotations

import numpy as np
import torch

from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.parallel.tables import local_shards, table_weights

INIT_BLOCK_ROWS = 65_536
"""Rows generated per seeded block: a rank generates only the blocks its shards overlap."""


@torch.no_grad()
def initialize_tables(model: torch.nn.Module, config: TwhinModelConfig, seed: int) -> None:
    """Fill every local shard from N(0, init_std²), identically for any sharding or world size.

    Values are generated in fixed row blocks seeded by (seed, table, block), so a rank creates only
    the blocks its shards overlap (memory stays bounded) and a row's initial value never depends on
    where the row lives.
    """
    weights = table_weights(model)
    for table_index, table in enumerate(config.embeddings.tables):
        for shard, row0, col0 in local_shards(weights[table.name]):
            rows, cols = shard.shape
            first_block, last_block = row0 // INIT_BLOCK_ROWS, (row0 + rows - 1) // INIT_BLOCK_ROWS
            for block in range(first_block, last_block + 1):
                block_start = block * INIT_BLOCK_ROWS
                block_rows = min(INIT_BLOCK_ROWS, table.num_embeddings - block_start)
                rng = np.random.default_rng([seed, table_index, block])
                values = rng.standard_normal((block_rows, table.embedding_dim), dtype=np.float32)
                values *= table.effective_init_std
                lo, hi = max(row0, block_start), min(row0 + rows, block_start + block_rows)
                source = torch.from_numpy(
                    values[lo - block_start : hi - block_start, col0 : col0 + cols]
                )
                shard[lo - row0 : hi - row0].copy_(source)
