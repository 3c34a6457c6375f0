"""The grouped scorer (relations of one operator kind scored together, stacked parameters,
uniform negatives per table) against a per-relation reference: the previous scorer's code, one
relation at a time, fed the same embeddings and the same negatives. Loss and gradients agree
for every operator, comparator, loss, with and without reciprocal relations and per-chunk
negatives, over full chunks, shorter last chunks, relations smaller than a chunk and padding."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch

from tests.helpers_data import decode_slots
from tml.projects.twhin.batch.edge_batch import EdgeBatch
from tml.projects.twhin.batch.layout import GraphShape, SlotLayout, chunk_groups
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.builder import EdgeBatchBuilder
from tml.projects.twhin.models import scorer as scorer_module
from tml.projects.twhin.models.losses import NO_NEGATIVE
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.models.operators import OPERATORS as OPERATOR_REGISTRY
from tml.projects.twhin.models.scorer import EdgeScorer, in_chunks

OPERATORS = ["identity", "translation", "diagonal", "complex_diagonal", "linear"]
SGD = {"sgd": {"lr": 0.1}}
K, G, B = 2, 3, 24


def reference_chunks(
    scorer: EdgeScorer,
    index: int,
    lhs: torch.Tensor,
    rhs: torch.Tensor,
    lhs_negatives: torch.Tensor,
    rhs_negatives: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """The previous scorer's `_score_chunks`: relation `index`'s positives `(n, d)`, n a
    multiple of `chunk`, against their negatives; per-positive losses."""
    compare, operator = scorer.comparator, scorer.operators[index]
    lhs_op = in_chunks(operator(lhs), chunk)
    rhs_chunks = in_chunks(rhs, chunk)
    pairs = compare.all_pairs(lhs_op, rhs_chunks)
    has_uniform = lhs_negatives.shape[-2] > 0
    rhs_side = [pairs]
    if has_uniform:
        rhs_side.append(compare.all_pairs(lhs_op, rhs_negatives))
    if scorer.reverse_operators is None:
        lhs_side = [pairs.mT]
        if has_uniform:
            lhs_side.append(compare.all_pairs(rhs_chunks, operator(lhs_negatives)))
        candidates = torch.cat(rhs_side + lhs_side, -1)
        lhs_start = sum(block.shape[-1] for block in rhs_side)
        candidates[..., lhs_start : lhs_start + chunk].diagonal(0, -2, -1).fill_(NO_NEGATIVE)
        sides = [candidates]
    else:
        rhs_query = in_chunks(scorer.reverse_operators[index](rhs), chunk)
        lhs_side = [compare.all_pairs(rhs_query, in_chunks(lhs, chunk))]
        if has_uniform:
            lhs_side.append(compare.all_pairs(rhs_query, lhs_negatives))
        sides = [torch.cat(rhs_side, -1), torch.cat(lhs_side, -1)]
    sides = [scores.flatten(0, 1) for scores in sides]
    target = torch.arange(lhs.shape[0]) % chunk
    loss = cast(torch.Tensor, sum(scorer.loss_function.over_candidates(s, target) for s in sides))
    if scorer.regularization:
        loss = loss + scorer.regularization * (lhs.abs().pow(3).sum(-1) + rhs.abs().pow(3).sum(-1))
    return loss


def reference_loss(model: TwhinModel, batch: EdgeBatch, tables: list[str]) -> torch.Tensor:
    """The batch's loss scored relation by relation (each relation's positives in batch order,
    chunked by the chunk rule), with the negatives the batch drew for it."""
    scorer, layout, pieces = model.scorer, batch.layout, batch.pieces
    weights = [model.tables.embedding_bags[name].weight for name in tables]
    slot_table, slot_id = decode_slots(batch)

    def rows(slots: np.ndarray) -> torch.Tensor:
        return torch.stack([weights[slot_table[s]][slot_id[s]] for s in slots])

    def slots(part: slice) -> np.ndarray:
        return np.arange(layout.num_slots)[part]

    real = batch.weight.numpy() == 1
    losses = []
    for relation, (lhs_table, rhs_table) in enumerate(layout.graph.relation_tables):
        mine = np.flatnonzero((batch.relation.numpy() == relation) & real)
        if len(mine) == 0:
            continue
        lhs, rhs = rows(mine), rows(B + mine)
        start = 0
        for count, chunk in chunk_groups(len(mine), K):
            first_rows = mine[start : start + count : chunk]
            if layout.global_negatives_per_chunk:  # each chunk's owner: its place in the buckets
                owners = [
                    bucket.first_chunk + (row - bucket.start) // bucket.width
                    for row in first_rows
                    for bucket in pieces.buckets
                    if bucket.start <= row < bucket.stop
                ]
                lhs_negatives = torch.stack(
                    [rows(slots(layout.lhs_negative_slots(o))) for o in owners]
                )
                rhs_negatives = torch.stack(
                    [rows(slots(layout.rhs_negative_slots(o))) for o in owners]
                )
            else:  # the negatives of the relation's tables
                lhs_owner = layout.lhs_tables.index(lhs_table)
                rhs_owner = layout.rhs_tables.index(rhs_table)
                lhs_negatives = rows(slots(layout.lhs_negative_slots(lhs_owner)))
                rhs_negatives = rows(slots(layout.rhs_negative_slots(rhs_owner)))
            part = slice(start, start + count)
            losses.append(
                reference_chunks(
                    scorer, relation, lhs[part], rhs[part], lhs_negatives, rhs_negatives, chunk
                )  # fmt: skip
            )
            start += count
    return torch.cat(losses).sum() / int(real.sum())


def model_and_batch(
    operator: str, comparator: str, loss: str, reciprocal: bool, per_chunk: bool
) -> tuple[TwhinModel, EdgeBatch]:
    other = "diagonal" if operator == "translation" else "translation"
    relations = [("follows", "user", "user", operator), ("fav", "user", "tweet", operator),
                 ("reply", "user", "tweet", other), ("rt", "user", "tweet", operator)]  # fmt: skip
    raw = {
        "model": {
            "translation_optimizer": SGD,
            "embeddings": {"tables": [
                {"name": "user", "num_embeddings": 40, "embedding_dim": 4, "optimizer": SGD},
                {"name": "tweet", "num_embeddings": 30, "embedding_dim": 4, "optimizer": SGD},
            ]},
            "relations": [{"name": n, "lhs": lhs, "rhs": rhs, "operator": op}
                          for n, lhs, rhs, op in relations],
            "comparator": comparator, "loss": loss, "reciprocal_relations": reciprocal,
            "regularization": 0.01,
        },
        "train_data": {"data_root": "unused", "per_replica_batch_size": B,
                       "global_negatives": G, "in_batch_negatives": K},
    }  # fmt: skip
    config = TwhinConfig.model_validate(raw)
    torch.manual_seed(3)
    model = TwhinModel(config.model, table_device=torch.device("cpu"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    # groups: (operator, user, user), (operator, user, tweet) = fav + rt, (other, user, tweet)
    assert model.scorer.relation_groups == (0, 1, 2, 1)
    layout = SlotLayout(config.model.graph_shape(), B, G, K, global_negatives_per_chunk=per_chunk)
    rng = np.random.default_rng(0)
    # follows 1 (a chunk of 1), fav 7 (chunks 3, 3, 1), reply 5 (3, 2), rt 2 (2); 9 padding
    rel = rng.permutation(np.repeat([0, 1, 2, 3], [1, 7, 5, 2]))
    lhs = rng.integers(0, 40, len(rel))
    rhs = np.where(rel == 0, rng.integers(0, 40, len(rel)), rng.integers(0, 30, len(rel)))
    batch = EdgeBatchBuilder(layout).build(lhs, rel, rhs, rng)
    return model, batch


@pytest.mark.parametrize("per_chunk", [False, True])
@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("loss", ["softmax", "logistic", "ranking"])
@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "l1"])
@pytest.mark.parametrize("operator", OPERATORS)
def test_grouped_scoring_equals_the_per_relation_scorer(
    operator: str, comparator: str, loss: str, reciprocal: bool, per_chunk: bool
) -> None:
    assert_equals_reference(operator, comparator, loss, reciprocal, per_chunk)


@pytest.mark.parametrize("per_chunk", [False, True])
@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("operator", OPERATORS)
def test_buckets_scored_in_parts_equal_the_per_relation_scorer(
    operator: str, reciprocal: bool, per_chunk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU large buckets are scored in parts (of one chunk here)."""
    monkeypatch.setattr(scorer_module, "CPU_PART_ROWS", 1)
    assert_equals_reference(operator, "dot", "softmax", reciprocal, per_chunk)


def assert_equals_reference(
    operator: str, comparator: str, loss: str, reciprocal: bool, per_chunk: bool
) -> None:
    model, batch = model_and_batch(operator, comparator, loss, reciprocal, per_chunk)
    # widths 3, 2, 1 in the fav + rt group: fav's full chunks, rt, fav's last chunk
    assert [(b.group, b.width, b.num_chunks) for b in batch.pieces.buckets] == [
        (0, 1, 1), (1, 3, 2), (1, 2, 1), (1, 1, 1), (2, 3, 1), (2, 2, 1),
    ]  # fmt: skip
    grouped, _ = model(batch)
    parameters = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(grouped, parameters, allow_unused=True)
    reference = reference_loss(model, batch, ["user", "tweet"])
    expected = torch.autograd.grad(reference, parameters, allow_unused=True)
    torch.testing.assert_close(grouped, reference, rtol=1e-5, atol=1e-6)
    for name, a, b in zip([n for n, p in model.named_parameters() if p.requires_grad], got,
                          expected, strict=True):  # fmt: skip
        assert (a is None) == (b is None) or operator == "identity", name
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_every_parameter_gets_a_gradient_when_its_group_has_no_positive() -> None:
    """DDP's static graph expects the same parameters to receive gradients every step."""
    model, full = model_and_batch("translation", "dot", "softmax", True, False)
    only_fav = np.array([1, 1])  # group 1; groups 0 and 2 have no positive
    batch = EdgeBatchBuilder(SlotLayout(full.layout.graph, B, G, K)).build(
        np.array([1, 2]), only_fav, np.array([3, 4]), np.random.default_rng(0)
    )
    loss, _ = model(batch)
    loss.backward()
    for name, parameter in model.scorer.named_parameters():
        assert parameter.grad is not None, name
    unused = model.scorer.operator_groups[0].translation.grad
    assert torch.equal(unused, torch.zeros_like(unused))


@pytest.mark.parametrize("per_chunk", [False, True])
def test_work_and_lookups_do_not_grow_with_the_number_of_relations(per_chunk: bool) -> None:
    """1,000 relations of one operator and table pair with a batch of 1,000 positives and
    in-batch negatives off (import_kg's defaults): one bucket, and per batch G uniform
    negatives per side, as with one relation."""
    for relations in (1, 4, 1000):
        graph = GraphShape(("entity",), (20_000,), ((0, 0),) * relations)
        layout = SlotLayout(graph, 1000, 100, 0, global_negatives_per_chunk=per_chunk)
        rel = np.random.default_rng(0).integers(0, relations, 1000)
        pieces = layout.pieces(np.bincount(rel, minlength=relations))
        assert [(b.width, b.num_chunks) for b in pieces.buckets] == [(1, 1000)]
        negatives_per_side = 1000 * 100 if per_chunk else 100
        assert layout.num_slots == 2 * 1000 + 2 * negatives_per_side


@pytest.mark.parametrize("name", OPERATORS)
def test_operators_move_across_a_dot_product_and_translations_across_a_distance(
    name: str,
) -> None:
    """What lets the scorer score corrupted sources without transforming each one:
    <op_r(x), y> = <x, q> + b (the adjoint) and |op_r(x) - y| = |x - shift_r(y)|."""
    stack = OPERATOR_REGISTRY[name](6, 6, count=3)
    with torch.no_grad():
        for parameter in stack.parameters():
            parameter.copy_(torch.randn_like(parameter))
    x, y, relation = torch.randn(4, 5, 6), torch.randn(4, 2, 6), torch.tensor([2, 0, 1, 2])
    moved = stack.adjoint(y, relation)
    assert moved is not None, "every built-in operator is affine"
    query, bias = moved
    dot = x @ query.mT + (0 if bias is None else bias.mT)
    torch.testing.assert_close(dot, stack(x, relation) @ y.mT, rtol=1e-5, atol=1e-5)
    shifted = stack.shift(y, relation)
    assert (shifted is not None) == (name in ("identity", "translation"))
    if shifted is not None:
        distance = torch.cdist(x, shifted)
        torch.testing.assert_close(distance, torch.cdist(stack(x, relation), y))
