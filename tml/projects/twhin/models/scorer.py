"""`EdgeScorer`: looked-up embeddings of a batch -> scores of positives and negatives -> loss.

Plain PyTorch (no TorchRec import at run time), so the same code runs on CPU and GPU and can be
benchmarked on a GPU machine without the embedding kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import record_function

from tml.core.profiling import SCORING_RANGE
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.losses import LOSSES, NO_NEGATIVE, split_candidates
from tml.projects.twhin.models.operators import OPERATORS

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import KeyedTensor

    from tml.projects.twhin.batch.edge_batch import EdgeBatch
    from tml.projects.twhin.models.config import TwhinModelConfig


@dataclass
class ChunkScores:
    """A group of one relation's positives (its full chunks, or its shorter last chunk), each
    with its candidates (see losses.py): one `(n, m)` score matrix per side, the positive in
    column `target`, and their loss."""

    loss: torch.Tensor  # (n,) loss of each positive
    target: torch.Tensor  # (n,) the positive's column in each side's scores
    sides: list[torch.Tensor]  # [(n, m)]: rhs and lhs corruptions, or one of each per side

    def edge_scores(self) -> dict[str, torch.Tensor]:
        """Per-edge scores `(n, ...)` for validation: each negative with the positive it
        competes with (in the order of `sides`)."""
        positives, negatives, competing = [], [], []
        for scores in self.sides:
            positive, negative = split_candidates(scores.detach(), self.target)
            positives.append(positive)
            negatives.append(negative)
            competing.append(positive.unsqueeze(-1).expand_as(negative))
        negative = torch.cat(negatives, -1)
        return {
            "positive_scores": positives[0],
            "negative_scores": negative.masked_fill(negative == NO_NEGATIVE, 0.0),
            "competing_scores": torch.cat(competing, -1),
            "negative_mask": negative != NO_NEGATIVE,
        }


def per_table(embeddings: KeyedTensor) -> dict[str, torch.Tensor]:
    """The looked-up rows of each table, `(slots, dim)`. Like `KeyedTensor.to_dict`, but a
    single table's output is used whole: a one-piece split would copy the gradient."""
    keys, values = embeddings.keys(), embeddings.values()
    if len(keys) == 1:
        return {keys[0]: values}
    return dict(zip(keys, values.split(embeddings.length_per_key(), dim=1), strict=True))


def in_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """`(n, d)` -> `(n / chunk, chunk, d)`, a view."""
    return x.view(-1, chunk, x.shape[-1])


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
    * in-batch: the positives are cut into chunks of K + 1 (the last one shorter, scored as a
      group of its own, so nothing is padded); in a chunk, S[i, j] = score(l_i, t_j)
      for all pairs is one batched matrix product, whose row i holds positive i's rhs-corrupted
      scores and whose column j holds positive j's lhs-corrupted ones. No embedding is
      gathered or copied per negative.

    The diagonal of S holds the positives themselves, so each positive's candidates (losses.py)
    are its row and column of S plus its uniform negatives, laid side by side with the positive
    counted once, and softmax is one `cross_entropy` over them.
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

    def operator(self, relation: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """op_r of relation `relation` (lhs -> rhs space), for ranking and search."""
        return self.operators[relation]

    def reverse_operator(self, relation: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """rev_r of relation `relation` (rhs -> lhs space); None without reciprocal relations."""
        return None if self.reverse_operators is None else self.reverse_operators[relation]

    def relation_parameters(self, relation: int) -> dict[str, torch.Tensor]:
        """Relation `relation`'s parameters by name, its reverse operator's prefixed
        `reverse.` (the names of relations.parquet); writable in place."""
        parameters: dict[str, torch.Tensor] = dict(self.operators[relation].named_parameters())
        if self.reverse_operators is not None:
            for name, value in self.reverse_operators[relation].named_parameters():
                parameters[f"reverse.{name}"] = value
        return parameters

    def forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with record_function(SCORING_RANGE):  # a stage of runtime.profile_steps' breakdown
            return self._forward(embeddings, batch)

    def _forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = batch.relation.shape[0]
        offsets = batch.relation_offsets
        # The batch contract says which piece of the lookups is what. One split per table: its
        # backward is one concatenation, where slicing per group would materialise a zero
        # gradient of the whole table output per slice.
        split = batch.pieces()
        num_global = batch.layout.global_negatives
        pieces = {
            name: rows.split(split.split_sizes) for name, rows in per_table(embeddings).items()
        }
        parts = []
        for index, group in enumerate(split.groups):
            lhs_table, rhs_table = self.relations[group.relation]
            lhs_negatives = pieces[lhs_table][split.lhs_negatives_piece(index)]
            rhs_negatives = pieces[rhs_table][split.rhs_negatives_piece(index)]
            if split.per_chunk:  # (chunks * G, d) -> (chunks, G, d)
                lhs_negatives = lhs_negatives.view(group.num_chunks, num_global, -1)
                rhs_negatives = rhs_negatives.view(group.num_chunks, num_global, -1)
            parts.append(
                self._score_chunks(
                    group.relation,
                    lhs=pieces[lhs_table][split.lhs_piece(index)],
                    rhs=pieces[rhs_table][split.rhs_piece(index)],
                    lhs_negatives=lhs_negatives,
                    rhs_negatives=rhs_negatives,
                    chunk=group.chunk,
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
        parts: list[ChunkScores], size: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Scores in batch order (groups are consecutive); padding rows are 0 and masked."""
        per_group = [part.edge_scores() for part in parts]
        if not per_group:  # an all-padding batch
            none = torch.zeros(size, 0, device=device)
            return {
                "positive_scores": torch.zeros(size, device=device),
                "negative_scores": none,
                "competing_scores": none,
                "negative_mask": none.bool(),
            }
        width = max(scores["negative_mask"].shape[1] for scores in per_group)
        out = {}
        for key in per_group[0]:
            rows = [scores[key] for scores in per_group]
            if key != "positive_scores":  # groups may differ in their number of negatives
                rows = [F.pad(row, (0, width - row.shape[1])) for row in rows]
            real = torch.cat(rows)
            out[key] = torch.cat([real, real.new_zeros((size - real.shape[0], *real.shape[1:]))])
        return out

    def _score_chunks(
        self,
        index: int,
        lhs: torch.Tensor,
        rhs: torch.Tensor,
        lhs_negatives: torch.Tensor,
        rhs_negatives: torch.Tensor,
        chunk: int,
    ) -> ChunkScores:
        """Relation `index`'s positives `(n, d)`, n a multiple of `chunk`, against their
        negatives."""
        compare, operator = self.comparator, self.operators[index]
        lhs_op = in_chunks(operator(lhs), chunk)
        rhs_chunks = in_chunks(rhs, chunk)
        # pairs[c, i, j] = score(l_i, t_j): row i corrupts t_i, column j corrupts l_j, and the
        # diagonal holds the positives. Candidates of the rhs: [pairs | uniform rhs].
        pairs = compare.all_pairs(lhs_op, rhs_chunks)
        has_uniform = lhs_negatives.shape[-2] > 0  # G shared (G, d) or per chunk (chunks, G, d)
        rhs_side = [pairs]
        if has_uniform:
            rhs_side.append(compare.all_pairs(lhs_op, rhs_negatives))
        if self.reverse_operators is None:  # lhs corruptions go through op_r: pairs' columns
            lhs_side = [pairs.mT]
            if has_uniform:
                lhs_side.append(compare.all_pairs(rhs_chunks, operator(lhs_negatives)))
            # One softmax over both corruptions: the positive (pairs' diagonal) counts once, so
            # the transposed copy's diagonal is no negative.
            candidates = torch.cat(rhs_side + lhs_side, -1)
            lhs_start = sum(block.shape[-1] for block in rhs_side)
            candidates[..., lhs_start : lhs_start + chunk].diagonal(0, -2, -1).fill_(NO_NEGATIVE)
            sides = [candidates]
        else:  # lhs corruptions are scored against rev_r(rhs), in a loss of their own
            rhs_query = in_chunks(self.reverse_operators[index](rhs), chunk)
            lhs_side = [compare.all_pairs(rhs_query, in_chunks(lhs, chunk))]
            if has_uniform:
                lhs_side.append(compare.all_pairs(rhs_query, lhs_negatives))
            sides = [torch.cat(rhs_side, -1), torch.cat(lhs_side, -1)]
        sides = [scores.flatten(0, 1) for scores in sides]
        target = torch.arange(lhs.shape[0], device=lhs.device) % chunk
        loss = cast(
            torch.Tensor,
            sum(self.loss_function.over_candidates(scores, target) for scores in sides),
        )
        if self.regularization:
            loss = loss + self.regularization * (
                lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1)
            )
        return ChunkScores(loss, target, sides)
