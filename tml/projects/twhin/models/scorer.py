"""`EdgeScorer`: looked-up embeddings of a batch -> scores of positives and negatives -> loss.

Plain PyTorch (no TorchRec import at run time), so the same code runs on CPU and GPU and can be
benchmarked on a GPU machine without the embedding kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.profiler import record_function

from tml.core.profiling import SCORING_RANGE
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.edge_scores import ChunkScores, edge_scores
from tml.projects.twhin.models.losses import LOSSES, NO_NEGATIVE
from tml.projects.twhin.models.operators import OPERATORS, OneRelation, RelationOperator

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import KeyedTensor

    from tml.projects.twhin.batch.edge_batch import EdgeBatch
    from tml.projects.twhin.batch.layout import Bucket
    from tml.projects.twhin.models.config import TwhinModelConfig


CPU_PART_ROWS = 2560
"""Positives scored together at most on a CPU: the bench's buckets of 10,000 scored in parts of
2,550 took 22 ms of backward instead of 26 (one bucket), as fast as the per-relation groups."""


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

    Relations of one operator kind between the same tables form a scoring group: their operator
    parameters are stacked (operators.py) and gathered per chunk, so the work of a step grows
    with the number of groups and chunk widths (the batch's buckets), not with the relations.
    On a CPU a large bucket is scored in parts of at most CPU_PART_ROWS positives.

    Negatives, per positive:
    * in-batch: a relation's positives are cut into chunks of K + 1 (the last one shorter); the
      batch lays each group's chunks of one width side by side (a bucket), so a bucket is
      `(chunks, width, d)` and S[c, i, j] = score(l_i, t_j) for all pairs of every chunk is one
      batched matrix product, whose row i holds positive i's rhs-corrupted scores and whose
      column j holds positive j's lhs-corrupted ones. No embedding is copied per negative.
    * uniform: G lhs and G rhs entities drawn per table and batch (shared by every positive
      whose relation uses that table on that side) or, with `global_negatives_per_chunk`, per
      chunk; one (batched) matrix product per bucket and side.

    The diagonal of S holds the positives themselves, so each positive's candidates (losses.py)
    are its row and column of S plus its uniform negatives, laid side by side with the positive
    counted once, and softmax is one `cross_entropy` over them.
    """

    def __init__(self, config: TwhinModelConfig) -> None:
        super().__init__()
        self.relations = [(rel.lhs, rel.rhs) for rel in config.relations]
        self.relation_groups = config.scoring_groups()
        self.members: list[list[int]] = [[] for _ in range(max(self.relation_groups) + 1)]
        self.place = []  # relation -> its row in its group's stacked parameters
        for relation, group in enumerate(self.relation_groups):
            self.place.append(len(self.members[group]))
            self.members[group].append(relation)
        self._place = torch.tensor(self.place)  # moved to the batches' device on first use
        self.group_tables = [self.relations[members[0]] for members in self.members]
        self.operator_groups = self._stacks(config, reverse=False)
        self.reverse_operator_groups = (
            self._stacks(config, reverse=True) if config.reciprocal_relations else None
        )
        # Views of each relation's rows, built once (not submodules: the stacks hold the state).
        self._operators = self._per_relation(self.operator_groups)
        self._reverse_operators = (
            self._per_relation(self.reverse_operator_groups)
            if self.reverse_operator_groups is not None
            else None
        )
        self.comparator = COMPARATORS[config.comparator]()
        self.loss_function = LOSSES[config.loss](margin=config.margin)
        self.regularization = config.regularization

    def _stacks(self, config: TwhinModelConfig, reverse: bool) -> nn.ModuleList:
        """One stacked operator per scoring group (from rhs to lhs for the reverse ones)."""
        dims = {table.name: table.embedding_dim for table in config.embeddings.tables}
        stacks = nn.ModuleList()
        for members, (lhs, rhs) in zip(self.members, self.group_tables, strict=True):
            sides = (dims[rhs], dims[lhs]) if reverse else (dims[lhs], dims[rhs])
            kind = config.relations[members[0]].operator
            stacks.append(OPERATORS[kind](*sides, len(members)))
        return stacks

    # -- one relation's operators (ranking, export, search) --------------------------------------

    @property
    def operators(self) -> list[OneRelation]:
        """The operator of each relation, as a module on embeddings of any shape."""
        return self._operators

    @property
    def reverse_operators(self) -> list[OneRelation] | None:
        """The reverse operator of each relation, or None without reciprocal relations."""
        return self._reverse_operators

    def operator(self, relation: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """op_r of relation `relation` (lhs -> rhs space), for ranking and search."""
        return self.operators[relation]

    def reverse_operator(self, relation: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """rev_r of relation `relation` (rhs -> lhs space); None without reciprocal relations."""
        return None if self.reverse_operators is None else self.reverse_operators[relation]

    def _per_relation(self, stacks: nn.ModuleList) -> list[OneRelation]:
        return [
            cast(RelationOperator, stacks[group]).relation(self.place[relation])
            for relation, group in enumerate(self.relation_groups)
        ]

    def relation_parameters(self, relation: int) -> dict[str, torch.Tensor]:
        """Relation `relation`'s parameters by name, its reverse operator's prefixed
        `reverse.` (the names of relations.parquet)."""
        parameters = {}
        for prefix, stacks in (
            ("", self.operator_groups),
            ("reverse.", self.reverse_operator_groups),
        ):
            if stacks is not None:
                stack = cast(RelationOperator, stacks[self.relation_groups[relation]])
                for name, value in stack.parameters_of(self.place[relation]).items():
                    parameters[prefix + name] = value
        return parameters

    def per_relation_names(self) -> dict[str, list[str]]:
        """Each stacked parameter's state-dict name -> the names its rows had when every
        relation held its own operator module (`operators.<r>.<name>`, the checkpoints of
        earlier versions): row i is the i-th name."""
        names = {}
        for stacked, single in (("operator_groups", "operators"),
                                ("reverse_operator_groups", "reverse_operators")):  # fmt: skip
            stacks = getattr(self, stacked)
            if stacks is None:
                continue
            for group, (stack, members) in enumerate(zip(stacks, self.members, strict=True)):
                for name, _ in stack.named_parameters(recurse=False):
                    names[f"{stacked}.{group}.{name}"] = [f"{single}.{r}.{name}" for r in members]
        return names

    # -- scoring a batch --------------------------------------------------------------------------

    def forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with record_function(SCORING_RANGE):  # a stage of runtime.profile_steps' breakdown
            return self._forward(embeddings, batch)

    def _forward(
        self, embeddings: KeyedTensor, batch: EdgeBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.layout.graph.groups != self.relation_groups:
            raise ValueError("the batch's scoring groups are not this model's; build batches "
                             "from model.graph_shape()")  # fmt: skip
        size = batch.relation.shape[0]
        # The batch contract says which piece of the lookups is what. One split per table: its
        # backward is one concatenation, where slicing per bucket would materialise a zero
        # gradient of the whole table output per slice.
        split = batch.pieces
        pieces = {
            name: rows.split(split.split_sizes) for name, rows in per_table(embeddings).items()
        }
        if self._place.device != batch.relation.device:
            self._place = self._place.to(batch.relation.device)
        parts = [
            self._score_bucket(bucket.group, *tensors)
            for index, bucket in enumerate(split.buckets)
            for tensors in self._bucket_parts(batch, pieces, index)
        ]
        # Differentiable zeros for what no bucket scored: the lookups of an all-padding batch (a
        # rank with a shorter data span), and the groups without positives (DDP's static graph
        # expects a gradient for every parameter every step).
        unscored = self._unused_parameters(split.buckets)
        if not parts:
            unscored.append(embeddings.values().sum())
        total = torch.stack([part.loss.sum() for part in parts] + [x * 0.0 for x in unscored])
        total = total.sum()
        loss = total / max(split.num_real, 1)
        output = {"loss": loss.detach(), "weight": batch.weight}
        if not self.training:  # per-edge scores, for validation's sampled AUC
            output.update(edge_scores(parts, size, batch.weight.device))
        return loss, output

    def _bucket_parts(
        self, batch: EdgeBatch, pieces: dict[str, tuple[torch.Tensor, ...]], index: int
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """(relation, lhs, rhs, lhs negatives, rhs negatives) of bucket `index`, `_score_bucket`'s
        arguments, in parts of at most CPU_PART_ROWS positives on a CPU (where a whole large
        bucket's working set falls out of cache) and whole elsewhere."""
        split, bucket = batch.pieces, batch.pieces.buckets[index]
        lhs_table, rhs_table = self.group_tables[bucket.group]
        lhs = pieces[lhs_table][split.lhs_piece(index)]
        rhs = pieces[rhs_table][split.rhs_piece(index)]
        chunks = bucket.num_chunks
        if lhs.device.type == "cpu":
            chunks = max(1, min(chunks, CPU_PART_ROWS // bucket.width))
        rows, size = chunks * bucket.width, batch.layout.global_negatives
        sides = (pieces[lhs_table][split.lhs_negatives[index]],
                 pieces[rhs_table][split.rhs_negatives[index]])  # fmt: skip
        parts = -(-bucket.num_chunks // chunks)
        negatives: list[Sequence[torch.Tensor]] = [
            # per chunk (chunks * G, d): each part's chunks' own; else (G, d), shared
            side.split(chunks * size) if split.per_chunk else [side] * parts
            for side in sides
        ]
        relations = batch.relation[bucket.start : bucket.stop].split(rows)
        for relation, lhs_part, rhs_part, lhs_negatives, rhs_negatives in zip(
            relations, lhs.split(rows), rhs.split(rows), *negatives, strict=True
        ):
            count = len(relation) // bucket.width
            if split.per_chunk:  # (count * G, d) -> (count, G, d)
                lhs_negatives = lhs_negatives.view(count, size, lhs_negatives.shape[-1])
                rhs_negatives = rhs_negatives.view(count, size, rhs_negatives.shape[-1])
            # Each chunk is one relation's: its first row says which.
            first = relation.view(count, bucket.width)[:, 0]
            yield (self._place[first], in_chunks(lhs_part, bucket.width),
                   in_chunks(rhs_part, bucket.width), lhs_negatives, rhs_negatives)  # fmt: skip

    def _unused_parameters(self, buckets: tuple[Bucket, ...]) -> list[torch.Tensor]:
        """Sums of the parameters of the groups without positives in this batch."""
        present = {bucket.group for bucket in buckets}
        stacks = [self.operator_groups, self.reverse_operator_groups or nn.ModuleList()]
        return [
            value.sum()
            for modules in stacks
            for group, stack in enumerate(modules)
            if group not in present
            for value in stack.parameters()
        ]

    def _score_bucket(
        self,
        group: int,
        relation: torch.Tensor,
        lhs: torch.Tensor,
        rhs: torch.Tensor,
        lhs_negatives: torch.Tensor,
        rhs_negatives: torch.Tensor,
    ) -> ChunkScores:
        """One bucket of group `group`: positives `(n, w, d)` in n chunks of w, chunk c of
        relation `relation[c]` (its row in the group's stacks), against their negatives
        (`(G, d)` shared or `(n, G, d)` per chunk). Tensors in, tensors out: no host reads."""
        compare, operator = self.comparator, self.operator_groups[group]
        chunks, width = lhs.shape[0], lhs.shape[1]
        lhs_op = operator(lhs, relation)
        # pairs[c, i, j] = score(l_i, t_j): row i corrupts t_i, column j corrupts l_j, and the
        # diagonal holds the positives. Candidates of the rhs: [pairs | uniform rhs].
        pairs = compare.all_pairs(lhs_op, rhs)
        has_uniform = lhs_negatives.shape[-2] > 0
        rhs_side = [pairs]
        if has_uniform:
            rhs_side.append(compare.all_pairs(lhs_op, rhs_negatives))
        if self.reverse_operator_groups is None:  # lhs corruptions go through op_r: pairs' columns
            lhs_side = [pairs.mT]
            if has_uniform:
                lhs_side.append(self._corrupted_sources(group, relation, rhs, lhs_negatives))
            # One softmax over both corruptions: the positive (pairs' diagonal) counts once, so
            # the transposed copy's diagonal is no negative.
            candidates = torch.cat(rhs_side + lhs_side, -1)
            lhs_start = sum(block.shape[-1] for block in rhs_side)
            candidates[..., lhs_start : lhs_start + width].diagonal(0, -2, -1).fill_(NO_NEGATIVE)
            sides = [candidates]
        else:  # lhs corruptions are scored against rev_r(rhs), in a loss of their own
            rhs_query = self.reverse_operator_groups[group](rhs, relation)
            lhs_side = [compare.all_pairs(rhs_query, lhs)]
            if has_uniform:
                lhs_side.append(compare.all_pairs(rhs_query, lhs_negatives))
            sides = [torch.cat(rhs_side, -1), torch.cat(lhs_side, -1)]
        sides = [scores.flatten(0, 1) for scores in sides]
        target = torch.arange(chunks * width, device=lhs.device) % width
        loss = cast(
            torch.Tensor,
            sum(self.loss_function.over_candidates(scores, target) for scores in sides),
        )
        if self.regularization:
            loss = (
                loss
                + self.regularization
                * (lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1)).flatten()
            )
        return ChunkScores(loss, target, sides)

    def _corrupted_sources(
        self, group: int, relation: torch.Tensor, rhs: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """score(op_r(n_j), t_i) of uniform lhs negatives n_j `(G, d)` or `(chunks, G, d)`, for
        rhs `(chunks, w, d)`. The operator moves onto the rhs where the comparator allows it (a
        distance: a translation's shift; dot, cos, l2: its adjoint, with |op_r(n_j)| from the
        negatives transformed once per relation of the group); else it is applied to the
        negatives of every chunk (`(chunks, G, d)` of memory)."""
        compare = self.comparator
        operator = cast(RelationOperator, self.operator_groups[group])
        if compare.translation_invariant and (shifted := operator.shift(rhs, relation)) is not None:
            return compare.all_pairs(shifted, negatives)
        moved = operator.adjoint(rhs, relation)
        if moved is not None:
            query, bias = moved

            def inner() -> torch.Tensor:
                products = query @ negatives.mT
                return products if bias is None else products + bias

            def squared_norms() -> tuple[torch.Tensor, torch.Tensor]:
                if negatives.dim() == 2:  # shared: each relation of the group transforms them once
                    every = torch.arange(operator.count, device=negatives.device)
                    sources = operator(negatives.expand(operator.count, *negatives.shape), every)
                    lhs = sources.pow(2).sum(-1)[relation]
                else:
                    lhs = operator(negatives, relation).pow(2).sum(-1)
                return lhs.unsqueeze(-2), rhs.pow(2).sum(-1, keepdim=True)

            scores = compare.from_inner_products(inner, squared_norms)
            if scores is not None:
                return scores
        per_chunk = negatives.expand(rhs.shape[0], *negatives.shape[-2:])
        return compare.all_pairs(rhs, operator(per_chunk, relation))
