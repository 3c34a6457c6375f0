"""TwHIN model: TorchRec entity tables -> relation operator -> dot product -> loss.

`TwhinModel.forward` is deliberately two lines: the table lookup (a sharded module TorchRec's
train pipeline can overlap with compute) and the scorer (an ordinary leaf module).
"""

from __future__ import annotations

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


class EdgeScorer(nn.Module):
    """Scores positives and their negatives from looked-up embeddings and returns the loss.

    score(l, r, t) = comparator(op_r(e_l), e_t). Negatives go through the same operator as
    positives: a corrupted rhs is compared with op_r(e_l), a corrupted lhs is transformed by op_r.
    """

    def __init__(self, config: TwhinModelConfig) -> None:
        super().__init__()
        dims = {table.name: table.embedding_dim for table in config.embeddings.tables}
        self.relations = [(rel.lhs, rel.rhs) for rel in config.relations]
        self.operators = nn.ModuleList(
            OPERATORS[rel.operator](dims[rel.lhs], dims[rel.rhs]) for rel in config.relations
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
        compare = self.comparator
        total_loss = torch.zeros((), device=batch.weight.device)
        order, positives, negatives, masks = [], [], [], []
        for index, ((lhs_table, rhs_table), operator) in enumerate(
            zip(self.relations, self.operators, strict=True)
        ):
            rows = (batch.relation == index).nonzero().squeeze(1)
            lhs_all, rhs_all = by_table[lhs_table], by_table[rhs_table]
            lhs, rhs = lhs_all[rows], rhs_all[size + rows]
            lhs_op = operator(lhs)
            positive = compare.aligned(lhs_op, rhs)
            scores, valid = [], []
            if batch.in_batch_partner.shape[1]:
                partner = batch.in_batch_partner[rows]
                scores.append(compare.aligned(lhs_op.unsqueeze(1), rhs_all[size + partner]))
                scores.append(compare.aligned(operator(lhs_all[partner]), rhs.unsqueeze(1)))
                valid += [batch.in_batch_mask[rows]] * 2
            if num_global:
                first = 2 * size + 2 * num_global * index
                lhs_negatives = lhs_all[first : first + num_global]
                rhs_negatives = rhs_all[first + num_global : first + 2 * num_global]
                scores.append(compare.all_pairs(lhs_op, rhs_negatives))
                scores.append(compare.all_pairs(rhs, operator(lhs_negatives)))
                valid.append(torch.ones_like(scores[-1], dtype=torch.bool).repeat(1, 2))
            negative = torch.cat(scores, dim=1)
            mask = torch.cat(valid, dim=1)
            loss = self.loss_function(positive, negative, mask)
            if self.regularization:
                cubes = lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1)
                loss = loss + self.regularization * cubes
            total_loss = total_loss + (loss * batch.weight[rows]).sum()
            order.append(rows)
            positives.append(positive.detach())
            negatives.append(negative.detach())
            masks.append(mask)
        loss = total_loss / batch.weight.sum().clamp(min=1.0)
        # Scores were computed relation by relation; put them back in batch order.
        inverse = torch.empty_like(batch.relation)
        inverse[torch.cat(order)] = torch.arange(size, device=inverse.device)
        return loss, {
            "loss": loss.detach(),
            "positive_scores": torch.cat(positives)[inverse],
            "negative_scores": torch.cat(negatives)[inverse],
            "negative_mask": torch.cat(masks)[inverse],
            "weight": batch.weight,
        }


class TwhinModel(nn.Module):
    """Entity tables (an EmbeddingBagCollection, sharded by DMP) plus the edge scorer."""

    def __init__(self, config: TwhinModelConfig, table_device: torch.device) -> None:
        super().__init__()
        self.tables = EmbeddingBagCollection(tables=table_configs(config), device=table_device)
        self.scorer = EdgeScorer(config)

    def forward(self, batch: EdgeBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings = self.tables(batch.lookups)
        return self.scorer(embeddings, batch)
