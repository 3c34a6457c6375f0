"""Build an `EdgeDataset` whose batches fit a model's tables and relations."""

from __future__ import annotations

from tml.projects.twhin.batch.layout import GraphShape, SlotLayout
from tml.projects.twhin.data.builder import EdgeBatchBuilder
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.reader import EdgeDataset


def make_dataset(
    shape: GraphShape, data: TwhinDataConfig, name: str, *, rank: int, world_size: int,
    seed: int, shuffle: bool,
) -> EdgeDataset:  # fmt: skip
    """An `EdgeDataset` of `data`'s edges in batches of `shape`'s tables and relations."""
    layout = SlotLayout(
        batch_size=data.per_replica_batch_size,
        global_negatives=data.global_negatives,
        in_batch_negatives=data.in_batch_negatives,
        num_relations=len(shape.relation_tables),
        global_negatives_per_chunk=data.global_negatives_per_chunk,
    )
    return EdgeDataset(
        data, EdgeBatchBuilder(shape, layout), shape.relation_table_sizes, rank=rank,
        world_size=world_size, seed=seed, shuffle=shuffle, name=name,
    )  # fmt: skip
