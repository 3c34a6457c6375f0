"""TwHIN model: TorchRec entity tables -> `EdgeScorer` (relation operator, comparator, loss).

`TwhinModel.forward` is deliberately two lines: the table lookup (a sharded module TorchRec's
train pipeline can overlap with compute) and the scorer (an ordinary leaf module, scorer.py).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchrec.modules.embedding_configs import DataType as TorchrecDataType
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.models.anchor import ANCHOR_SUFFIX, AnchorTerm, anchor_table_name
from tml.projects.twhin.models.compiled_scoring import compile_scoring
from tml.projects.twhin.models.config import DataType, TwhinModelConfig
from tml.projects.twhin.models.scorer import EdgeScorer

_DATA_TYPES = {DataType.FP32: TorchrecDataType.FP32, DataType.FP16: TorchrecDataType.FP16}
_TABLE_WEIGHT = re.compile(r"embedding_bags\.([^.]+)\.weight")


def table_weight_key(table: str) -> str:
    """The key of a table's weight in `TwhinModel`'s (and its DMP's) state dict."""
    return f"tables.embedding_bags.{table}.weight"


def anchor_weight_key(table: str) -> str:
    """The key of a table's frozen copy (`warm_start.anchor`) in the model's state dict."""
    return f"anchors.embedding_bags.{anchor_table_name(table)}.weight"


def table_of_key(key: str) -> str | None:
    """The table whose weight a key ends with (state dict, checkpoint or optimizer key)."""
    match = _TABLE_WEIGHT.search(key)
    return match.group(1) if match and match.end() == len(key) else None


def table_in_key(key: str) -> str | None:
    """The table whose weight a key names anywhere (optimizer state keys go on past it)."""
    match = _TABLE_WEIGHT.search(key)
    return match.group(1) if match else None


def table_configs(config: TwhinModelConfig, suffix: str = "") -> list[EmbeddingBagConfig]:
    """One TorchRec table per entity type (named with `suffix`), with one feature named like
    the entity type."""
    return [
        EmbeddingBagConfig(
            name=table.name + suffix,
            feature_names=[table.name],
            num_embeddings=table.num_embeddings,
            embedding_dim=table.embedding_dim,
            pooling=PoolingType.SUM,
            data_type=_DATA_TYPES[table.data_type],
        )
        for table in config.embeddings.tables
    ]


class TwhinModel(nn.Module):
    """Entity tables (an EmbeddingBagCollection, sharded by DMP) plus the edge scorer."""

    def __init__(
        self, config: TwhinModelConfig, table_device: torch.device, anchor: float = 0.0
    ) -> None:
        super().__init__()
        self.tables = EmbeddingBagCollection(tables=table_configs(config), device=table_device)
        self.scorer = EdgeScorer(config)
        self.anchors: EmbeddingBagCollection | None = None  # warm_start.anchor's frozen copy
        if anchor > 0:
            self.anchors = EmbeddingBagCollection(
                tables=table_configs(config, ANCHOR_SUFFIX), device=table_device
            )
            self.anchor_term = AnchorTerm([t.name for t in config.embeddings.tables], anchor)
        if config.compile:
            compile_scoring(self.scorer)

    def forward(self, batch: EdgeBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings = self.tables(batch.lookups)
        loss, output = self.scorer(embeddings, batch)
        if self.anchors is not None:  # looked up every step: the pipeline fetches it anyway
            loss = loss + self.anchor_term(embeddings, self.anchors(batch.lookups), batch)
        return loss, output
