"""Build an `EdgeDataset` that fits a config's tables and relations."""

from __future__ import annotations

from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.edges import EdgeBatchBuilder, SlotLayout
from tml.projects.twhin.data.reader import EdgeDataset


def make_dataset(
    config: TwhinConfig, data: TwhinDataConfig, name: str, *, rank: int, world_size: int,
    shuffle: bool,
) -> EdgeDataset:  # fmt: skip
    """An `EdgeDataset` whose batches fit the model's tables and relations."""
    tables = config.model.embeddings.tables
    names = [table.name for table in tables]
    sizes = {table.name: table.num_embeddings for table in tables}
    relations = config.model.relations
    builder = EdgeBatchBuilder(
        table_names=names,
        table_sizes=[sizes[name] for name in names],
        relation_tables=[(names.index(r.lhs), names.index(r.rhs)) for r in relations],
        layout=SlotLayout(
            batch_size=data.per_replica_batch_size,
            global_negatives=data.global_negatives,
            in_batch_negatives=data.in_batch_negatives,
            num_relations=len(relations),
            global_negatives_per_chunk=data.global_negatives_per_chunk,
        ),
    )
    return EdgeDataset(
        data,
        builder,
        [(sizes[r.lhs], sizes[r.rhs]) for r in relations],
        rank=rank,
        world_size=world_size,
        seed=config.training.seed,
        shuffle=shuffle,
        name=name,
    )
