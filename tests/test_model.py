"""The scoring and loss math, on an unsharded model (the sharded path is tested end to end)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.edges import EdgeBatchBuilder, SlotLayout
from tml.projects.twhin.models.losses import Logistic
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
    builder = EdgeBatchBuilder(
        ["user", "tweet"], [40, 30], [(0, 0), (0, 1)],
        SlotLayout(batch_size=8, global_negatives=3, in_batch_negatives=2, num_relations=2),
    )  # fmt: skip
    return model, builder


def test_logistic_loss_labels_positives_one_and_negatives_zero() -> None:
    positive = torch.tensor([0.3, -1.2], requires_grad=True)
    negative = torch.tensor([[0.5, -0.4, 2.0], [1.0, 0.0, -3.0]], requires_grad=True)
    mask = torch.ones_like(negative, dtype=torch.bool)
    loss = logistic_loss(positive, negative, mask)
    expected = F.binary_cross_entropy_with_logits(
        positive, torch.ones(2), reduction="none"
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros(2, 3), reduction="none").mean(1)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert (positive.grad < 0).all(), "descending must raise positive scores"
    assert (negative.grad > 0).all(), "descending must lower negative scores (label 0)"


def test_negatives_share_one_unit_of_weight_and_masked_ones_do_not_count() -> None:
    positive = torch.zeros(1)
    few = logistic_loss(positive, torch.full((1, 2), 1.5), torch.ones(1, 2, dtype=torch.bool))
    many = logistic_loss(positive, torch.full((1, 50), 1.5), torch.ones(1, 50, dtype=torch.bool))
    torch.testing.assert_close(few, many)
    mask = torch.tensor([[True, False]])
    masked = logistic_loss(positive, torch.tensor([[1.5, 99.0]]), mask)
    torch.testing.assert_close(masked, few)


def test_every_score_is_the_operator_applied_to_lhs_dotted_with_rhs() -> None:
    model, builder = make_model_and_builder()
    model.scorer.operators[1].translation.data = torch.tensor([0.1, -0.2, 0.3, 0.05])
    lhs, rel, rhs = np.array([1, 2, 3, 4, 5]), np.array([1, 1, 1, 0, 0]), np.array([7, 8, 9, 6, 5])
    batch = builder.build(lhs, rel, rhs, np.random.default_rng(0))
    _, output = model(batch)
    users = model.tables.embedding_bags["user"].weight.detach()
    tweets = model.tables.embedding_bags["tweet"].weight.detach()
    t = model.scorer.operators[1].translation.detach()
    assert torch.equal(output["weight"], torch.tensor([1.0] * 5 + [0.0] * 3))  # 3 padding rows
    torch.testing.assert_close(output["positive_scores"][0], ((users[1] + t) * tweets[7]).sum())
    # In-batch negatives of positive 0 (fav): partners' rhs against op(lhs), and op(partner lhs).
    partners = batch.in_batch_partner[0]
    assert set(rel[partners.numpy()]) == {1} and 0 not in partners.tolist()
    expected_rhs = ((users[1] + t) * tweets[rhs[partners]]).sum(-1)
    expected_lhs = ((users[lhs[partners]] + t) * tweets[7]).sum(-1)
    # Layout per positive: rhs-corrupted (K in-batch, G uniform), then lhs-corrupted (K, G).
    scores = output["negative_scores"][0]
    torch.testing.assert_close(scores[:2], expected_rhs)
    torch.testing.assert_close(scores[5:7], expected_lhs)
    # Uniform negatives of fav (the last relation) fill the last slots of each table: rhs ones
    # are compared with op(lhs), lhs ones go through the operator themselves.
    lookups = batch.lookups.to_dict()
    negative_tweets = lookups["tweet"].values()[-3:]
    negative_users = lookups["user"].values()[-3:]
    torch.testing.assert_close(scores[2:5], ((users[1] + t) * tweets[negative_tweets]).sum(-1))
    torch.testing.assert_close(scores[7:10], ((users[negative_users] + t) * tweets[7]).sum(-1))
    # Without reciprocal relations every negative competes with the one forward score.
    torch.testing.assert_close(
        output["competing_scores"][0], output["positive_scores"][0].expand(10)
    )


def test_reciprocal_relations_score_lhs_corruptions_with_the_reverse_operator() -> None:
    config = {**CONFIG, "model": {**CONFIG["model"], "reciprocal_relations": True}}
    model = TwhinModel(TwhinConfig.model_validate(config).model, table_device=torch.device("cpu"))
    _, builder = make_model_and_builder()
    reverse = model.scorer.reverse_operators[1]
    reverse.translation.data = torch.tensor([0.2, 0.1, -0.3, 0.4])
    batch = builder.build(
        np.array([1, 2]), np.array([1, 1]), np.array([7, 8]), np.random.default_rng(0)
    )
    _, output = model(batch)
    users = model.tables.embedding_bags["user"].weight.detach()
    tweets = model.tables.embedding_bags["tweet"].weight.detach()
    rev = reverse.translation.detach()
    negative_users = batch.lookups.to_dict()["user"].values()[-3:]
    scores = output["negative_scores"][0]
    torch.testing.assert_close(scores[7:10], (users[negative_users] * (tweets[7] + rev)).sum(-1))
    torch.testing.assert_close(
        output["competing_scores"][0, 7], (users[1] * (tweets[7] + rev)).sum()
    )


def test_training_separates_positives_from_negatives_and_moves_translations() -> None:
    model, builder = make_model_and_builder(seed=1)
    before = [op.translation.detach().clone() for op in model.scorer.operators]
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
        gaps.append((output["positive_scores"].mean() - output["negative_scores"].mean()).item())
    assert np.mean(gaps[-20:]) > np.mean(gaps[:20]) + 1.0
    for old, operator in zip(before, model.scorer.operators, strict=True):
        assert not torch.equal(old, operator.translation), "translations must be trained"


@pytest.mark.parametrize("operator", ["translation"])
def test_operators_reject_tables_of_different_dims(operator: str) -> None:
    from tml.projects.twhin.models.operators import OPERATORS

    assert OPERATORS[operator].dimension_problem(4, 8)
    assert OPERATORS[operator].dimension_problem(8, 8) is None
