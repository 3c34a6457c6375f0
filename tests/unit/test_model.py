"""The scoring and loss math, on an unsharded model (the sharded path is tested end to end)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.helpers_data import decode_slots
from tml.projects.twhin.batch.layout import GraphShape, SlotLayout
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.builder import EdgeBatchBuilder
from tml.projects.twhin.models.losses import LOSSES, Logistic
from tml.projects.twhin.models.model import TwhinModel

logistic_loss = Logistic()

CONFIG = {
    "model": {
        "translation_optimizer": {"sgd": {"lr": 0.1}},
        "embeddings": {
            "tables": [
                {"name": "user", "num_embeddings": 40, "embedding_dim": 4,
                 "optimizer": {"sgd": {"lr": 0.1}}},
                {"name": "tweet", "num_embeddings": 30, "embedding_dim": 4,
                 "optimizer": {"sgd": {"lr": 0.1}}},
            ]
        },
        "relations": [
            {"name": "follows", "lhs": "user", "rhs": "user"},
            {"name": "fav", "lhs": "user", "rhs": "tweet"},
        ],
    },
    "train_data": {"data_root": "unused", "per_replica_batch_size": 8,
                   "global_negatives": 3, "in_batch_negatives": 2},
}  # fmt: skip


def make_model_and_builder(seed: int = 0) -> tuple[TwhinModel, EdgeBatchBuilder]:
    config = TwhinConfig.model_validate(CONFIG)
    torch.manual_seed(seed)
    model = TwhinModel(config.model, table_device=torch.device("cpu"))
    for bag in model.tables.embedding_bags.values():
        torch.nn.init.normal_(bag.weight, std=0.5)
    graph = GraphShape(("user", "tweet"), (40, 30), ((0, 0), (0, 1)))
    builder = EdgeBatchBuilder(
        SlotLayout(graph, batch_size=8, global_negatives=3, in_batch_negatives=2)
    )
    return model, builder


@torch.no_grad()
def set_parameter(scorer: torch.nn.Module, relation: int, name: str, value: torch.Tensor) -> None:
    """Set one relation's operator parameter (a row of its group's stacked parameter)."""
    scorer.relation_parameters(relation)[name].copy_(value)


def test_logistic_loss_labels_positives_one_and_negatives_zero() -> None:
    positive = torch.tensor([0.3, -1.2], requires_grad=True)
    negative = torch.tensor([[0.5, -0.4, 2.0], [1.0, 0.0, -3.0]], requires_grad=True)
    loss = logistic_loss(positive, negative)
    expected = F.binary_cross_entropy_with_logits(
        positive, torch.ones(2), reduction="none"
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros(2, 3), reduction="none").mean(1)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert (positive.grad < 0).all(), "descending must raise positive scores"
    assert (negative.grad > 0).all(), "descending must lower negative scores (label 0)"


@pytest.mark.parametrize("name", ["logistic", "softmax", "ranking"])
def test_a_minus_infinity_slot_is_no_negative_and_gets_no_gradient(name: str) -> None:
    loss_function = LOSSES[name](margin=0.5)
    positive = torch.tensor([0.2])
    present = loss_function(positive, torch.tensor([[1.5, -0.3]]))
    negative = torch.tensor([[1.5, float("-inf"), -0.3]], requires_grad=True)
    padded = loss_function(positive, negative)
    torch.testing.assert_close(padded, present)
    padded.sum().backward()
    assert negative.grad[0, 1] == 0 and torch.isfinite(negative.grad).all()
    # A positive without any negative has a finite loss and gradient (no NaN from an empty set).
    lonely = torch.tensor([0.2], requires_grad=True)
    loss_function(lonely, torch.full((1, 2), float("-inf"))).sum().backward()
    assert torch.isfinite(lonely.grad).all()


def test_negatives_share_one_unit_of_weight() -> None:
    positive = torch.zeros(1)
    few = logistic_loss(positive, torch.full((1, 2), 1.5))
    many = logistic_loss(positive, torch.full((1, 50), 1.5))
    torch.testing.assert_close(few, many)


def test_every_score_is_the_operator_applied_to_lhs_dotted_with_rhs() -> None:
    model, builder = make_model_and_builder()
    model.eval()  # per-edge scores are output in eval mode
    set_parameter(model.scorer, 1, "translation", torch.tensor([0.1, -0.2, 0.3, 0.05]))
    lhs, rel, rhs = np.array([1, 2, 3, 4, 5]), np.array([1, 1, 1, 0, 0]), np.array([7, 8, 9, 6, 5])
    batch = builder.build(lhs, rel, rhs, np.random.default_rng(0))
    _, output = model(batch)
    users = model.tables.embedding_bags["user"].weight.detach()
    tweets = model.tables.embedding_bags["tweet"].weight.detach()
    t = model.scorer.relation_parameters(1)["translation"].detach()
    # Batch order groups relations: follows (4->6, 5->5), then fav (1->7, 2->8, 3->9), padding.
    assert [(b.group, b.start, b.stop) for b in batch.pieces.buckets] == [(0, 0, 2), (1, 2, 5)]
    assert torch.equal(output["weight"], torch.tensor([1.0] * 5 + [0.0] * 3))
    first_fav = 2
    torch.testing.assert_close(
        output["positive_scores"][first_fav], ((users[1] + t) * tweets[7]).sum()
    )
    # Layout per positive: rhs-corrupted (K + 1 chunk columns, G uniform), then lhs-corrupted
    # (K + 1, G). With K = 2 the three fav positives are one chunk; column 0 is the positive
    # itself and is masked on both sides.
    scores = output["negative_scores"][first_fav]
    mask = output["negative_mask"][first_fav]
    assert mask.tolist() == [False, True, True, True, True, True] * 2
    torch.testing.assert_close(scores[1:3], ((users[1] + t) * tweets[[8, 9]]).sum(-1))
    torch.testing.assert_close(scores[7:9], ((users[[2, 3]] + t) * tweets[7]).sum(-1))
    # Uniform negatives of fav: those of the tweet table (rhs owner 1), compared with op(lhs),
    # and of the user table (lhs owner 0), which go through the operator themselves.
    _, slot_id = decode_slots(batch)
    negative_tweets = torch.from_numpy(slot_id[builder.layout.rhs_negative_slots(1)])
    negative_users = torch.from_numpy(slot_id[builder.layout.lhs_negative_slots(0)])
    torch.testing.assert_close(scores[3:6], ((users[1] + t) * tweets[negative_tweets]).sum(-1))
    torch.testing.assert_close(scores[9:12], ((users[negative_users] + t) * tweets[7]).sum(-1))
    # Without reciprocal relations every negative competes with the one forward score.
    torch.testing.assert_close(
        output["competing_scores"][first_fav], output["positive_scores"][first_fav].expand(12)
    )
    # follows has 2 positives, so its chunk is 2 wide and its rows end in 2 masked columns.
    assert output["negative_mask"][0].tolist() == [False, True, True, True, True] * 2 + [False] * 2
    assert not output["negative_mask"][5:].any()  # padding rows


def test_training_mode_scores_the_same_loss_without_per_edge_outputs() -> None:
    model, builder = make_model_and_builder()
    batch = builder.build(
        np.array([1, 2, 3, 4]), np.array([1, 0, 1, 1]), np.array([7, 8, 9, 6]),
        np.random.default_rng(0),
    )  # fmt: skip
    train_loss, train_output = model(batch)
    assert set(train_output) == {"loss", "weight"}
    model.eval()
    eval_loss, _ = model(batch)
    torch.testing.assert_close(train_loss, eval_loss)


def test_reciprocal_relations_score_lhs_corruptions_with_the_reverse_operator() -> None:
    config = {**CONFIG, "model": {**CONFIG["model"], "reciprocal_relations": True}}
    model = TwhinModel(TwhinConfig.model_validate(config).model, table_device=torch.device("cpu"))
    model.eval()
    _, builder = make_model_and_builder()
    set_parameter(model.scorer, 1, "reverse.translation", torch.tensor([0.2, 0.1, -0.3, 0.4]))
    batch = builder.build(
        np.array([1, 2]), np.array([1, 1]), np.array([7, 8]), np.random.default_rng(0)
    )
    _, output = model(batch)
    users = model.tables.embedding_bags["user"].weight.detach()
    tweets = model.tables.embedding_bags["tweet"].weight.detach()
    rev = model.scorer.relation_parameters(1)["reverse.translation"].detach()
    _, slot_id = decode_slots(batch)
    negative_users = torch.from_numpy(slot_id[builder.layout.lhs_negative_slots(0)])
    scores = output["negative_scores"][0]
    # per positive: rhs side (a chunk of the 2 positives, 3 uniform), lhs side (2, 3)
    torch.testing.assert_close(scores[7:10], (users[negative_users] * (tweets[7] + rev)).sum(-1))
    torch.testing.assert_close(scores[6], (users[2] * (tweets[7] + rev)).sum())
    torch.testing.assert_close(
        output["competing_scores"][0, 6], (users[1] * (tweets[7] + rev)).sum()
    )


def test_training_separates_positives_from_negatives_and_moves_translations() -> None:
    model, builder = make_model_and_builder(seed=1)
    before = [model.scorer.relation_parameters(r)["translation"].clone() for r in range(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    rng = np.random.default_rng(0)
    # A planted pattern: user u favs tweet u % 30 and follows user (u + 1) % 40.
    lhs = rng.integers(0, 40, 8 * 200)
    rel = rng.integers(0, 2, len(lhs))
    rhs = np.where(rel == 1, lhs % 30, (lhs + 1) % 40)
    gaps = []
    for step in range(200):
        part = slice(step * 8, (step + 1) * 8)
        batch = builder.build(lhs[part], rel[part], rhs[part], rng)
        loss, output = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.eval()
            _, scores = model(batch)
            model.train()
        real = scores["negative_mask"]
        gaps.append(
            (scores["positive_scores"].mean() - scores["negative_scores"][real].mean()).item()
        )
    assert np.mean(gaps[-20:]) > np.mean(gaps[:20]) + 1.0
    for relation, old in enumerate(before):
        now = model.scorer.relation_parameters(relation)["translation"]
        assert not torch.equal(old, now), "translations must be trained"


@pytest.mark.parametrize("operator", ["translation"])
def test_operators_reject_tables_of_different_dims(operator: str) -> None:
    from tml.projects.twhin.models.operators import OPERATORS

    assert OPERATORS[operator].dimension_problem(4, 8)
    assert OPERATORS[operator].dimension_problem(8, 8) is None


@pytest.mark.parametrize("loss", ["softmax", "logistic", "ranking"])
@pytest.mark.parametrize("per_chunk", [False, True])
@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "l1"])
def test_chunked_negatives_equal_scoring_each_corrupted_edge_alone(
    comparator: str, reciprocal: bool, per_chunk: bool, loss: str
) -> None:
    """Every in-batch and uniform negative equals the comparator applied to that one corrupted
    edge, for chunks that split a relation (7 positives in chunks of 3) and a partial chunk,
    with uniform negatives shared by a relation or drawn per chunk."""
    raw = {**CONFIG, "model": {**CONFIG["model"], "comparator": comparator, "loss": loss,
                               "reciprocal_relations": reciprocal}}  # fmt: skip
    model = TwhinModel(TwhinConfig.model_validate(raw).model, table_device=torch.device("cpu"))
    model.eval()
    torch.manual_seed(2)
    for bag in model.tables.embedding_bags.values():
        torch.nn.init.normal_(bag.weight, std=0.5)
    scorer = model.scorer
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    graph = GraphShape(("user", "tweet"), (40, 30), ((0, 0), (0, 1)))
    layout = SlotLayout(graph, batch_size=12, global_negatives=2, in_batch_negatives=2,
                        global_negatives_per_chunk=per_chunk)  # fmt: skip
    builder = EdgeBatchBuilder(layout)
    lhs = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    rel = np.array([1, 1, 1, 1, 1, 0, 1, 1, 0, 0])
    rhs = np.array([2, 7, 1, 8, 2, 8, 1, 8, 2, 8])
    batch = builder.build(lhs, rel, rhs, np.random.default_rng(1))
    _, output = model(batch)
    tables = [model.tables.embedding_bags[name].weight.detach() for name in ("user", "tweet")]
    slot_table, slot_id = decode_slots(batch)

    def embedding(slot: int) -> torch.Tensor:
        return tables[slot_table[slot]][slot_id[slot]]

    compare = scorer.comparator
    # follows (3 positives) is chunk 0; fav's 7 positives are chunks 1, 2 (of 3) and 3 (of 1)
    buckets = batch.pieces.buckets
    assert [(b.group, b.width, b.num_chunks, b.start) for b in buckets] == [
        (0, 3, 1, 0), (1, 3, 2, 3), (1, 1, 1, 9),
    ]  # fmt: skip
    losses = []
    for row in range(10):
        r = int(batch.relation[row])
        op = scorer.operators[r]
        bucket = next(b for b in buckets if b.start <= row < b.stop)
        start = row - (row - bucket.start) % bucket.width
        partners = [p for p in range(start, start + bucket.width) if p != row]
        chunk = bucket.first_chunk + (row - bucket.start) // bucket.width
        lhs_owner = chunk if per_chunk else layout.lhs_tables.index(0)  # every lhs is a user
        rhs_owner = chunk if per_chunk else layout.rhs_tables.index(r)  # follows: user, fav: tweet
        uniform_lhs = list(range(*layout.lhs_negative_slots(lhs_owner).indices(layout.num_slots)))
        uniform_rhs = list(range(*layout.rhs_negative_slots(rhs_owner).indices(layout.num_slots)))
        head, tail = embedding(row), embedding(12 + row)
        expected = [compare.aligned(op(head), embedding(12 + p)) for p in partners]
        expected += [compare.aligned(op(head), embedding(slot)) for slot in uniform_rhs]
        for slot in [*partners, *uniform_lhs]:
            if reciprocal:
                expected.append(compare.aligned(embedding(slot), scorer.reverse_operators[r](tail)))
            else:
                expected.append(compare.aligned(op(embedding(slot)), tail))
        got = output["negative_scores"][row][output["negative_mask"][row]]
        torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)
        positive = compare.aligned(op(head), tail).view(1)
        rhs_corrupted = torch.stack(expected[: len(partners) + len(uniform_rhs)]).view(1, -1)
        lhs_corrupted = torch.stack(expected[len(partners) + len(uniform_rhs) :]).view(1, -1)
        if reciprocal:  # one loss per side, each around its own positive
            reverse = compare.aligned(head, scorer.reverse_operators[r](tail)).view(1)
            edge_loss = scorer.loss_function(positive, rhs_corrupted)
            edge_loss = edge_loss + scorer.loss_function(reverse, lhs_corrupted)
        else:  # one loss over both corruptions
            edge_loss = scorer.loss_function(positive, rhs_corrupted, lhs_corrupted)
        losses.append(edge_loss)
    # The batch loss is the mean of these per-edge losses.
    torch.testing.assert_close(output["loss"], torch.cat(losses).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["logistic", "softmax", "ranking"])
def test_a_positive_without_negative_blocks_has_zero_negative_loss(name: str) -> None:
    positive = torch.tensor([0.5, -0.5], requires_grad=True)
    loss = LOSSES[name](margin=0.1)(positive)
    expected = F.softplus(-positive) if name == "logistic" else torch.zeros(2)
    torch.testing.assert_close(loss, expected)
