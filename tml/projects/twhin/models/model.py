"""TwHIN model: TorchRec entity tables -> relation operator -> dot product -> loss.

`TwhinModel.forward` is deliberately two lines: the table lookup (a sharded module TorchRec's
train pipeline can overlap with compute) and the scorer (an ordinary leaf module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.modules.embedding_configs import DataType as TorchrecDataType
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedTensor

from tml.projects.twhin.data.edges import EdgeBatch
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.config import DataType, TwhinModelConfig
from tml.projects.twhin.models.losses import LOSSES
from tml.projects.twhin.models.operators import OPERATORS

_DATA_TYPES = {DataType.FP32: TorchrecDataType.FP32, DataType.FP16: TorchrecDataType.FP16}


def table_configs(config: TwhinModelConfig) -> list[EmbeddingBagConfig]:
    """One TorchRec table per entity type, with one feature of the same name."""
    return [
        EmbeddingBagConfig(
            name=table.name,
            feature_names=[table.name],
            num_embeddings=table.num_embeddings,
            embedding_dim=table.embedding_dim,
            pooling=PoolingType.SUM,
            data_type=_DATA_TYPES[table.data_type],
        )
        for table in config.embeddings.tables
    ]


@dataclass
class RelationScores:
    """Scores of one relation's positives in a batch and of their negatives."""

    rows: torch.Tensor  # (n,) batch rows of this relation
    loss: torch.Tensor  # (n,) loss of each positive
    positive: torch.Tensor  # (n,) forward score of each positive
    negative: torch.Tensor  # (n, m) scores of its negatives
    competing: torch.Tensor  # (n, m) the positive score each negative competes with
    mask: torch.Tensor  # (n, m) valid negatives


class EdgeScorer(nn.Module):
    """Scores positives and their negatives from looked-up embeddings and returns the loss.

    score(l, r, t) = comparator(op_r(e_l), e_t). Negatives go through the same operator as
    positives: a corrupted rhs is compared with op_r(e_l), a corrupted lhs is transformed by op_r.
    With reciprocal relations each relation also has a reverse operator rev_r, used whenever the
    lhs is what is being predicted: score'(l, r, t) = comparator(e_l, rev_r(e_t)), trained on
    the lhs-corrupted negatives (as PyTorch-BigGraph does).
    """

    def __init__(self, config: TwhinModelConfig) -> None:
        super().__init__()
        dims = {table.name: table.embedding_dim for table in config.embeddings.tables}
        self.relations = [(rel.lhs, rel.rhs) for rel in config.relations]
        self.operators = nn.ModuleList(
            OPERATORS[rel.operator](dims[rel.lhs], dims[rel.rhs]) for rel in config.relations
        )
        self.reverse_operators = (
            nn.ModuleList(
                OPERATORS[rel.operator](dims[rel.rhs], dims[rel.lhs]) for rel in config.relations
            )
            if config.reciprocal_relations
            else None
        )
        self.comparator = COMPARATORS[config.comparator]()
        self.loss_function = LOSSES[config.loss](margin=config.margin)
        self.regularization = config.regularization

    def forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        by_table = embeddings.to_dict()
        size = batch.relation.shape[0]
        num_slots = next(iter(by_table.values())).shape[0]
        num_global = (num_slots - 2 * size) // (2 * len(self.relations))
        scored = [
            self._score_relation(index, by_table, batch, num_global)
            for index in range(len(self.relations))
        ]
        total = sum((part.loss * batch.weight[part.rows]).sum() for part in scored)
        loss = total / batch.weight.sum().clamp(min=1.0)
        # Scores were computed relation by relation; put them back in batch order.
        inverse = torch.empty_like(batch.relation)
        inverse[torch.cat([part.rows for part in scored])] = torch.arange(
            size, device=inverse.device
        )

        def gather(field: str) -> torch.Tensor:
            return torch.cat([getattr(part, field).detach() for part in scored])[inverse]

        return loss, {
            "loss": loss.detach(),
            "positive_scores": gather("positive"),
            "negative_scores": gather("negative"),
            "competing_scores": gather("competing"),
            "negative_mask": gather("mask"),
            "weight": batch.weight,
        }

    def _score_relation(
        self, index: int, by_table: dict[str, torch.Tensor], batch: EdgeBatch, num_global: int
    ) -> RelationScores:
        compare, operator = self.comparator, self.operators[index]
        lhs_table, rhs_table = self.relations[index]
        size = batch.relation.shape[0]
        rows = (batch.relation == index).nonzero().squeeze(1)
        lhs_all, rhs_all = by_table[lhs_table], by_table[rhs_table]
        lhs, rhs = lhs_all[rows], rhs_all[size + rows]
        lhs_op = operator(lhs)
        positive = compare.aligned(lhs_op, rhs)
        # Corrupted rhs: (n, k) in-batch partners' rhs and (G,) uniform ones, against op(lhs).
        rhs_side, lhs_side, rhs_mask = [], [], []
        partner = batch.in_batch_partner[rows]
        first = 2 * size + 2 * num_global * index
        lhs_negatives = lhs_all[first : first + num_global]
        rhs_negatives = rhs_all[first + num_global : first + 2 * num_global]
        if partner.shape[1]:
            rhs_side.append(compare.aligned(lhs_op.unsqueeze(1), rhs_all[size + partner]))
            rhs_mask.append(batch.in_batch_mask[rows])
        if num_global:
            rhs_side.append(compare.all_pairs(lhs_op, rhs_negatives))
            rhs_mask.append(torch.ones_like(rhs_side[-1], dtype=torch.bool))
        # Corrupted lhs: through op_r, or against rev_r(rhs) with reciprocal relations.
        if self.reverse_operators is None:
            reverse_positive = positive
            if partner.shape[1]:
                lhs_side.append(compare.aligned(operator(lhs_all[partner]), rhs.unsqueeze(1)))
            if num_global:
                lhs_side.append(compare.all_pairs(rhs, operator(lhs_negatives)))
        else:
            rhs_rev = self.reverse_operators[index](rhs)
            reverse_positive = compare.aligned(lhs, rhs_rev)
            if partner.shape[1]:
                lhs_side.append(compare.aligned(lhs_all[partner], rhs_rev.unsqueeze(1)))
            if num_global:
                lhs_side.append(compare.all_pairs(rhs_rev, lhs_negatives))
        negative_rhs, negative_lhs = torch.cat(rhs_side, 1), torch.cat(lhs_side, 1)
        mask_rhs = torch.cat(rhs_mask, 1)  # the same partners and counts on the lhs side
        negative = torch.cat([negative_rhs, negative_lhs], 1)
        mask = torch.cat([mask_rhs, mask_rhs], 1)
        if self.reverse_operators is None:
            loss = self.loss_function(positive, negative, mask)
        else:
            loss = self.loss_function(positive, negative_rhs, mask_rhs) + self.loss_function(
                reverse_positive, negative_lhs, mask_rhs
            )
        if self.regularization:
            loss = loss + self.regularization * (
                lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1)
            )
        competing = torch.cat(
            [
                positive.unsqueeze(1).expand_as(negative_rhs),
                reverse_positive.unsqueeze(1).expand_as(negative_lhs),
            ],
            1,
        )
        return RelationScores(
            rows=rows,
            loss=loss,
            positive=positive,
            negative=negative,
            competing=competing,
            mask=mask,
        )


class TwhinModel(nn.Module):
    """Entity tables (an EmbeddingBagCollection, sharded by DMP) plus the edge scorer."""

    def __init__(self, config: TwhinModelConfig, table_device: torch.device) -> None:
        super().__init__()
        self.tables = EmbeddingBagCollection(tables=table_configs(config), device=table_device)
        self.scorer = EdgeScorer(config)

    def forward(self, batch: EdgeBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings = self.tables(batch.lookups)
        return self.scorer(embeddings, batch)
