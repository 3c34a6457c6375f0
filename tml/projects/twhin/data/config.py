"""The `train_data` / `validation_data` config sections."""

from __future__ import annotations

import pydantic

from tml.core.config import BaseConfig


class TwhinDataConfig(BaseConfig):
    """Where the edges are and how they are batched and corrupted into negatives."""

    data_root: str = pydantic.Field(
        description="Parquet edges with int columns lhs, rel, rhs: a directory, a glob, a file "
        "or an fsspec URL (gs://, s3://, file://). `rel` indexes model.relations in config order."
    )
    per_replica_batch_size: pydantic.PositiveInt = pydantic.Field(
        description="Positive edges per rank per step (the global batch is this × world size)."
    )
    global_negatives: pydantic.NonNegativeInt = pydantic.Field(
        description="Per table and batch, this many ids drawn uniformly from each table some "
        "relation takes its rhs from (and as many from each lhs table); every positive is scored "
        "against those of its relation's tables, so each gets 2 × global_negatives corrupted "
        "edges, and their number does not grow with the relations."
    )
    in_batch_negatives: pydantic.NonNegativeInt = pydantic.Field(
        description="A relation's positives in a batch are cut into chunks of "
        "in_batch_negatives + 1; each positive's rhs (and, separately, lhs) is replaced by those "
        "of the others in its chunk: up to 2 × in_batch_negatives corrupted edges per positive, "
        "scored as one matrix product per chunk at no extra lookup cost (PyTorch-BigGraph's "
        "batch negatives)."
    )
    global_negatives_per_chunk: bool = pydantic.Field(
        False,
        description="Draw the global_negatives once per chunk of in_batch_negatives + 1 "
        "positives, from its relation's tables (PyTorch-BigGraph's sampling), instead of once "
        "per table and batch: about as many distinct negatives as positives whatever the batch "
        "size, for one extra lookup per positive and side when global_negatives = "
        "in_batch_negatives + 1. Keeps large batches as accurate as small ones.",
    )
    limit: pydantic.PositiveInt | None = pydantic.Field(
        None,
        description="Use at most this many edges, counted in the global order (files sorted "
        "by path, rows in file order) after `offset`. Default: all.",
    )
    offset: pydantic.NonNegativeInt = pydantic.Field(
        0,
        description="Skip this many edges of the global order first (e.g. to split one "
        "data_root into train rows [0, N) and validation rows [N, N+M)).",
    )
    shuffle_buffer_edges: pydantic.PositiveInt = pydantic.Field(
        262_144,
        description="Edges mixed together before batching. Row groups are visited in a random "
        "order each epoch and the edges of several are shuffled together; memory is bounded "
        "by this plus one row group.",
    )
