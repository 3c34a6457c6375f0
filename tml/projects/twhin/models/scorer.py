"""`EdgeScorer`: looked-up embeddings of a batch -> scores of positives and negatives -> loss.

Plain PyTorch (no TorchRec import at run time), so the same code runs on CPU and GPU and can be
benchmarked on a GPU machine without the embedding kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import record_function

from tml.core.profiling import SCORING_RANGE
from tml.projects.twhin.data.chunks import chunk_size, chunks_per_relation, max_chunks
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.losses import LOSSES
from tml.projects.twhin.models.operators import OPERATORS

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import KeyedTensor

    from tml.projects.twhin.data.edges import EdgeBatch
    from tml.projects.twhin.models.config import TwhinModelConfig

NO_NEGATIVE = float("-inf")
"""The score of a slot without a negative (see losses.py)."""


@dataclass
class RelationScores:
    """One relation's positives in a batch and their negatives, in chunks: `(c, k)` scores for
    c chunks of k positives (the last chunk zero-padded), with blocks of negatives `(c, k, m)`."""

    loss: torch.Tensor  # (n,) loss of each positive
    count: int  # n, the real positives
    positive: torch.Tensor  # (c, k) forward score of each positive
    reverse_positive: torch.Tensor  # (c, k) its score when the lhs is predicted
    rhs_blocks: list[torch.Tensor]  # rhs-corrupted scores (NO_NEGATIVE where none)
    lhs_blocks: list[torch.Tensor]  # lhs-corrupted scores (NO_NEGATIVE where none)

    def edge_scores(self) -> dict[str, torch.Tensor]:
        """Per-edge scores `(n, ...)` for validation: each negative with the positive it
        competes with (rhs-corrupted ones first)."""
        none = self.positive.new_zeros((*self.positive.shape, 0))  # no negatives at all
        rhs = torch.cat([*self.rhs_blocks, none], -1).detach()
        lhs = torch.cat([*self.lhs_blocks, none], -1).detach()
        negative = torch.cat([rhs, lhs], -1)
        competing = torch.cat(
            [
                self.positive.detach().unsqueeze(-1).expand_as(rhs),
                self.reverse_positive.detach().unsqueeze(-1).expand_as(lhs),
            ],
            -1,
        )

        def rows(scores: torch.Tensor) -> torch.Tensor:
            return scores.flatten(0, 1)[: self.count]  # (c, k, m) -> (n, m)

        return {
            "positive_scores": self.positive.detach().reshape(-1)[: self.count],
            "negative_scores": rows(negative.masked_fill(negative == NO_NEGATIVE, 0.0)),
            "competing_scores": rows(competing),
            "negative_mask": rows(negative != NO_NEGATIVE),
        }


def chunked(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """`(n, d)` -> `(ceil(n / chunk), chunk, d)`, zero-padding the last chunk."""
    padding = -x.shape[0] % chunk
    if padding:
        x = F.pad(x, (0, 0, 0, padding))
    return x.view(-1, chunk, x.shape[1])


def chunk_pair_mask(count: int, chunk: int, device: torch.device) -> torch.Tensor:
    """`(ceil(count / chunk), chunk, chunk)`: True where (i, j) is a pair of two different real
    positives of one chunk, i.e. a real corrupted edge both as row i and as column j."""
    row = torch.arange(-(-count // chunk) * chunk, device=device).view(-1, chunk, 1)
    column = row.transpose(1, 2)
    return (row != column) & (row < count) & (column < count)


class EdgeScorer(nn.Module):
    """Scores positives and their negatives from looked-up embeddings and returns the loss.

    score(l, r, t) = comparator(op_r(e_l), e_t). Negatives go through the same operator as
    positives: a corrupted rhs is compared with op_r(e_l), a corrupted lhs is transformed by op_r.
    With reciprocal relations each relation also has a reverse operator rev_r, used whenever the
    lhs is what is being predicted: score'(l, r, t) = comparator(e_l, rev_r(e_t)), trained on
    the lhs-corrupted negatives (as PyTorch-BigGraph does).

    Negatives, per relation (its positives are one contiguous slice of the batch):
    * uniform: G sampled lhs and G rhs entities, drawn once per relation and batch (scored
      against all its positives) or, with `global_negatives_per_chunk`, once per chunk (scored
      against that chunk's positives); one (batched) matrix product per side;
    * in-batch: the positives are cut into chunks of K + 1; in a chunk, S[i, j] = score(l_i, t_j)
      for all pairs is one batched matrix product, whose row i holds positive i's rhs-corrupted
      scores and whose column j holds positive j's lhs-corrupted ones (the diagonal holds the
      positives themselves and is masked). No embedding is gathered or copied per negative.
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
        with record_function(SCORING_RANGE):  # a stage of runtime.profile_steps' breakdown
            return self._forward(embeddings, batch)

    def _forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        by_table = embeddings.to_dict()
        size = batch.relation.shape[0]
        num_relations = len(self.relations)
        offsets = batch.relation_offsets
        counts = [offsets[r + 1] - offsets[r] for r in range(num_relations)]
        k = batch.in_batch_negatives
        # Uniform negatives: 2G slots per owner, a relation or (per chunk) each of its chunks.
        if batch.global_negatives_per_chunk:
            owners = chunks_per_relation(counts, k)
            num_owners = max_chunks(size, k, num_relations)
        else:
            owners, num_owners = [1] * num_relations, num_relations
        num_global = (embeddings.values().shape[0] - 2 * size) // (2 * num_owners)
        # One split per table into [lhs of relation 0..R-1, padding, rhs of 0..R-1, padding,
        # negatives of relation 0..R-1, unused]: its backward is one concatenation, where slicing
        # per relation would materialise a zero gradient of the whole table output per slice.
        negative_sizes = [2 * num_global * owned for owned in owners]
        unused = 2 * num_global * (num_owners - sum(owners))
        padding = size - offsets[-1]
        split_sizes = [*counts, padding, *counts, padding, *negative_sizes, unused]
        pieces = {name: value.split(split_sizes) for name, value in by_table.items()}
        rhs_first, negatives_first = num_relations + 1, 2 * num_relations + 2
        parts = []
        for index, (lhs_table, rhs_table) in enumerate(self.relations):
            if counts[index] == 0:
                continue
            # (owners, 2, G, dim): per owner G lhs then G rhs negatives (see edges.py)
            lhs_negatives = pieces[lhs_table][negatives_first + index]
            rhs_negatives = pieces[rhs_table][negatives_first + index]
            shape = (owners[index], 2, num_global)
            lhs_negatives = lhs_negatives.view(*shape, lhs_negatives.shape[-1])[:, 0]
            rhs_negatives = rhs_negatives.view(*shape, rhs_negatives.shape[-1])[:, 1]
            if not batch.global_negatives_per_chunk:  # one set shared by all chunks
                lhs_negatives, rhs_negatives = lhs_negatives[0], rhs_negatives[0]
            parts.append(
                self._score_relation(
                    index,
                    lhs=pieces[lhs_table][index],
                    rhs=pieces[rhs_table][rhs_first + index],
                    lhs_negatives=lhs_negatives,
                    rhs_negatives=rhs_negatives,
                    chunk=chunk_size(counts[index], k),
                )
            )
        if parts:
            total = torch.stack([part.loss.sum() for part in parts]).sum()
        else:  # an all-padding batch (a rank with a shorter data span): zero, still differentiable
            total = embeddings.values().sum() * 0.0
        loss = total / max(offsets[-1], 1)
        output = {"loss": loss.detach(), "weight": batch.weight}
        if not self.training:  # per-edge scores, for validation's sampled AUC
            output.update(self._edge_scores(parts, size, batch.weight.device))
        return loss, output

    @staticmethod
    def _edge_scores(
        parts: list[RelationScores], size: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Scores in batch order (relations are consecutive); padding rows are 0 and masked."""
        per_relation = [part.edge_scores() for part in parts]
        if not per_relation:  # an all-padding batch
            none = torch.zeros(size, 0, device=device)
            return {
                "positive_scores": torch.zeros(size, device=device),
                "negative_scores": none,
                "competing_scores": none,
                "negative_mask": none.bool(),
            }
        width = max(scores["negative_mask"].shape[1] for scores in per_relation)
        out = {}
        for key in per_relation[0]:
            rows = [scores[key] for scores in per_relation]
            if key != "positive_scores":  # relations may differ in their number of negatives
                rows = [F.pad(row, (0, width - row.shape[1])) for row in rows]
            real = torch.cat(rows)
            out[key] = torch.cat([real, real.new_zeros((size - real.shape[0], *real.shape[1:]))])
        return out

    def _score_relation(
        self,
        index: int,
        lhs: torch.Tensor,
        rhs: torch.Tensor,
        lhs_negatives: torch.Tensor,
        rhs_negatives: torch.Tensor,
        chunk: int,
    ) -> RelationScores:
        """Relation `index`'s positives `(n, d)` scored against their negatives."""
        compare, operator = self.comparator, self.operators[index]
        count = lhs.shape[0]
        lhs_op = chunked(operator(lhs), chunk)
        rhs_chunks = chunked(rhs, chunk)
        positive = compare.aligned(lhs_op, rhs_chunks)
        if self.reverse_operators is None:  # lhs corruptions go through op_r
            reverse_positive, rhs_query = positive, rhs_chunks
        else:  # lhs corruptions are scored against rev_r(rhs)
            lhs_chunks = chunked(lhs, chunk)
            rhs_query = chunked(self.reverse_operators[index](rhs), chunk)
            reverse_positive = compare.aligned(lhs_chunks, rhs_query)
        rhs_blocks, lhs_blocks = [], []
        if chunk > 1:  # pairs[c, i, j] = score(l_i, t_j): row i corrupts t_i, column j l_j
            real = chunk_pair_mask(count, chunk, lhs.device)
            pairs = compare.all_pairs(lhs_op, rhs_chunks).masked_fill(~real, NO_NEGATIVE)
            rhs_blocks.append(pairs)
            if self.reverse_operators is not None:
                pairs = compare.all_pairs(lhs_chunks, rhs_query)
                pairs = pairs.masked_fill(~real, NO_NEGATIVE)
            lhs_blocks.append(pairs.transpose(1, 2))
        if lhs_negatives.shape[-2]:  # G shared negatives (G, d), or per chunk (chunks, G, d)
            rhs_blocks.append(compare.all_pairs(lhs_op, rhs_negatives))
            if self.reverse_operators is None:
                lhs_negatives = operator(lhs_negatives)
            lhs_blocks.append(compare.all_pairs(rhs_query, lhs_negatives))
        if self.reverse_operators is None:
            loss = self.loss_function(positive, *rhs_blocks, *lhs_blocks)
        else:
            loss = self.loss_function(positive, *rhs_blocks) + self.loss_function(
                reverse_positive, *lhs_blocks
            )
        loss = loss.reshape(-1)[:count]
        if self.regularization:
            loss = loss + self.regularization * (
                lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1)
            )
        return RelationScores(loss, count, positive, reverse_positive, rhs_blocks, lhs_blocks)
