"""Filtered ranking against a brute-force computation, tie handling, and the scoring formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.eval.ranking import KnownEdges, RankedSide
from tml.projects.twhin.eval.sharded_ranking import evaluate_ranking
from tml.projects.twhin.models.comparators import COMPARATORS
from tml.projects.twhin.models.losses import LOSSES
from tml.projects.twhin.models.operators import OPERATORS
from tml.projects.twhin.models.scorer import EdgeScorer


def scorer_for(
    operator: str, comparator: str = "dot", dims: tuple[int, int] = (6, 6), reciprocal: bool = False
) -> EdgeScorer:
    config = TwhinConfig.model_validate({
        "model": {
            "translation_optimizer": {"sgd": {"lr": 0.1}},
            "comparator": comparator,
            "reciprocal_relations": reciprocal,
            "embeddings": {"tables": [
                {"name": "a", "num_embeddings": 9, "embedding_dim": dims[0],
                 "optimizer": {"sgd": {"lr": 0.1}}},
                {"name": "b", "num_embeddings": 7, "embedding_dim": dims[1],
                 "optimizer": {"sgd": {"lr": 0.1}}},
            ]},
            "relations": [{"name": "r0", "lhs": "a", "rhs": "b", "operator": operator},
                          {"name": "r1", "lhs": "a", "rhs": "a", "operator": operator}]
            if dims[0] == dims[1] or operator == "linear"
            else [{"name": "r0", "lhs": "a", "rhs": "b", "operator": operator}],
        },
        "train_data": {"data_root": "x", "per_replica_batch_size": 4, "global_negatives": 1,
                       "in_batch_negatives": 0},
    })  # fmt: skip
    scorer = EdgeScorer(config.model)
    torch.manual_seed(0)
    for parameter in scorer.parameters():  # move away from the identity-like initial values
        parameter.data += 0.3 * torch.randn_like(parameter)
    return scorer


@torch.no_grad()
def score_edge(
    scorer: EdgeScorer, tables: dict, rel: int, head: int, tail: int, predicting_head: bool
) -> float:
    lhs_table, rhs_table = scorer.relations[rel]
    lhs, rhs = tables[lhs_table][head], tables[rhs_table][tail]
    if predicting_head and scorer.reverse_operators is not None:
        return float(scorer.comparator.aligned(lhs, scorer.reverse_operators[rel](rhs)))
    return float(scorer.comparator.aligned(scorer.operators[rel](lhs), rhs))


def brute_force(scorer, tables, edges, known_edges, negatives=10, seed=0):
    """Ranks one score at a time with Python loops: the specification. Also the sampled AUC:
    for each edge and side, `negatives` entities drawn uniformly (one generator seeded with
    `seed`; relation by relation, all tails then all heads), those not filtered and not the
    true one scored against it, ties half."""
    known = {tuple(e) for e in known_edges.tolist()}
    generator = torch.Generator().manual_seed(seed)
    reciprocal, ranks, aucs = [], [], []
    for relation in range(len(scorer.relations)):
        mine = edges[edges[:, 1] == relation].tolist()
        lhs_table, rhs_table = scorer.relations[relation]
        sizes = {"tail": len(tables[rhs_table]), "head": len(tables[lhs_table])}
        draws = {side: torch.randint(sizes[side], (len(mine), negatives), generator=generator)
                 for side in ("tail", "head")} if mine else {}  # fmt: skip
        for index, (lhs, rel, rhs) in enumerate(mine):
            for side in ("tail", "head"):

                def score(head: int, tail: int, rel: int = rel, side: str = side) -> float:
                    return score_edge(scorer, tables, rel, head, tail, side == "head")

                def other(candidate: int, side: str = side, lhs: int = lhs, rhs: int = rhs,
                          rel: int = rel) -> float | None:  # fmt: skip
                    """The candidate's score, or None where it is filtered (or the true one)."""
                    edge = (lhs, rel, candidate) if side == "tail" else (candidate, rel, rhs)
                    if edge in known:
                        return None
                    return score(lhs, candidate) if side == "tail" else score(candidate, rhs)

                true = score(lhs, rhs)
                scores = [other(c) for c in range(sizes[side])]
                better = sum(s is not None and s > true for s in scores)
                tied = sum(s is not None and s == true for s in scores)
                ranks.append(1 + better + tied / 2)
                reciprocal.append(1 / ranks[-1])
                drawn = [scores[c] for c in draws[side][index].tolist()]
                valid = [s for s in drawn if s is not None]
                wins = sum(1.0 if true > s else 0.5 if true == s else 0.0 for s in valid)
                aucs.append(wins / max(len(valid), 1))
    return np.mean(reciprocal), np.mean(ranks), np.mean(np.array(ranks) <= 3), np.mean(aucs)


@pytest.mark.parametrize("operator", ["translation", "diagonal", "complex_diagonal", "linear"])
@pytest.mark.parametrize("comparator", ["dot", "cos", "l2", "l1"])
@pytest.mark.parametrize("reciprocal", [False, True])
def test_filtered_ranks_match_brute_force(operator: str, comparator: str, reciprocal: bool) -> None:
    scorer = scorer_for(operator, comparator, reciprocal=reciprocal)
    generator = torch.Generator().manual_seed(1)
    tables = {
        "a": torch.randn(9, 6, generator=generator),
        "b": torch.randn(7, 6, generator=generator),
    }
    rng = np.random.default_rng(0)
    rel = rng.integers(0, 2, 40)
    rhs_sizes = np.where(rel == 0, 7, 9)
    edges = np.stack([rng.integers(0, 9, 40), rel, (rng.random(40) * rhs_sizes).astype(int)], 1)
    known_edges = np.concatenate([edges, edges[:10, [0, 1, 2]] + [[0, 0, 0]]])
    evaluated = edges[:15]
    metrics = evaluate_ranking(scorer, tables, evaluated, KnownEdges(known_edges),
                               auc_negatives=10, seed=4)  # fmt: skip
    mrr, mean_rank, hits3, auc = brute_force(scorer, tables, evaluated, known_edges, 10, seed=4)
    assert metrics["mrr"] == pytest.approx(mrr, rel=1e-5)
    assert metrics["mean_rank"] == pytest.approx(mean_rank, rel=1e-5)
    assert metrics["hits@3"] == pytest.approx(hits3)
    assert metrics["auc"] == pytest.approx(auc, rel=1e-5)
    assert metrics["edges"] == 15


def test_filtering_only_removes_other_true_answers() -> None:
    scorer = scorer_for("diagonal")
    tables = {"a": torch.randn(9, 6), "b": torch.randn(7, 6)}
    edges = np.array([[0, 0, 3]])
    # Every other tail of (0, r0) is a known true edge: filtered, the tail ranks first.
    known = np.array([[0, 0, t] for t in range(7)])
    filtered = evaluate_ranking(scorer, tables, edges, KnownEdges(known))
    unfiltered = evaluate_ranking(scorer, tables, edges, None)
    assert filtered["mrr"] >= unfiltered["mrr"]
    assert filtered["hits@1"] >= 0.5  # the tail side has no competitor left: rank 1


def side_counts(excluded: tuple[list[int], list[int]], blocks: list[int]) -> RankedSide:
    """Two queries against 5 candidates whose dot scores are [1, 2, 2, 2, 0] (query 0, true
    row 1) and [5, 5, 5, 5, 5] (query 1, true row 4), counted in blocks of the given sizes;
    every candidate is drawn once for the AUC."""
    candidates = torch.tensor([[1.0, 5], [2, 5], [2, 5], [2, 5], [0, 5]])
    queries = torch.tensor([[1.0, 0], [0, 1]])
    true = torch.tensor([1, 4])
    side = RankedSide("b", queries, (queries * candidates[true]).sum(1),
                      (np.array(excluded[0]), np.array(excluded[1])), np.tile(np.arange(5), (2, 1)))  # fmt: skip
    start = 0
    for size in blocks:
        side.count_block(start, candidates[start : start + size], COMPARATORS["dot"]())
        start += size
    return side


@pytest.mark.parametrize("blocks", [[5], [2, 3], [1, 1, 1, 1, 1]])
def test_ties_count_half_and_the_true_entity_is_not_its_own_competitor(blocks: list[int]) -> None:
    side = side_counts(([0, 1], [1, 4]), blocks)  # only the true entities are left out
    ranks, auc = RankedSide.results(side.counts)
    # Query 0: none better, two tied with 2.0 besides itself -> 1 + 0 + 2/2 = 2.
    # Query 1: all five equal -> 1 + 4/2 = 3.
    assert ranks.tolist() == [2.0, 3.0]
    # AUC over the other rows: query 0 beats 1.0 and 0.0 and ties twice -> 3/4; query 1 ties all.
    assert auc.tolist() == [0.75, 0.5]
    side = side_counts(([0, 1, 0], [1, 4, 2]), blocks)  # row 2 is another answer of query 0
    ranks, auc = RankedSide.results(side.counts)
    assert ranks.tolist() == [1.5, 3.0]
    assert auc.tolist() == [2.5 / 3, 0.5]


def test_known_edges_index_finds_every_answer_in_both_directions() -> None:
    edges = np.array([[0, 1, 5], [0, 1, 6], [2, 1, 5], [0, 0, 5], [3, 1, 7]])
    known = KnownEdges(edges)
    query, tails = known.tails(1, np.array([0, 2, 9]))
    assert sorted(zip(query.tolist(), tails.tolist(), strict=True)) == [(0, 5), (0, 6), (1, 5)]
    query, heads = known.heads(1, np.array([5, 8]))
    assert sorted(zip(query.tolist(), heads.tolist(), strict=True)) == [(0, 0), (0, 2)]


@torch.no_grad()
def one_operator(name: str, lhs_dim: int, rhs_dim: int, **values: torch.Tensor) -> torch.nn.Module:
    """One relation's operator `name`, its parameters set to `values`."""
    stack = OPERATORS[name](lhs_dim, rhs_dim)
    for key, value in values.items():
        stack.parameters_of(0)[key].copy_(value)
    return stack.relation(0)


def test_operators_follow_their_formulas() -> None:
    x = torch.randn(3, 4)
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(one_operator("translation", 4, 4, translation=t)(x), x + t)
    d = torch.tensor([2.0, -1.0, 0.5, 3.0])
    torch.testing.assert_close(one_operator("diagonal", 4, 4, diagonal=d)(x), x * d)
    real, imaginary = torch.tensor([0.5, 2.0]), torch.tensor([1.5, -1.0])
    complex_op = one_operator("complex_diagonal", 4, 4, real=real, imaginary=imaginary)
    z = torch.complex(x[:, :2], x[:, 2:]) * torch.complex(real, imaginary)
    torch.testing.assert_close(complex_op(x), torch.cat([z.real, z.imag], 1))
    matrix = torch.randn(3, 4)
    linear = one_operator("linear", 4, 3, matrix=matrix)
    torch.testing.assert_close(linear(x), x @ matrix.T)
    assert linear(x).shape == (3, 3)
    torch.testing.assert_close(one_operator("identity", 4, 4)(x), x)


def test_complex_diagonal_with_dot_is_complex_trilinear_product() -> None:
    """ComplEx: Re(<h * r, conj(t)>)."""
    real, imaginary = torch.randn(3), torch.randn(3)
    op = one_operator("complex_diagonal", 6, 6, real=real, imaginary=imaginary)
    h, t = torch.randn(6), torch.randn(6)
    expected = (torch.complex(h[:3], h[3:]) * torch.complex(real, imaginary)
                * torch.complex(t[:3], t[3:]).conj()).sum().real  # fmt: skip
    torch.testing.assert_close(COMPARATORS["dot"]().aligned(op(h), t), expected)


@pytest.mark.parametrize(
    "name", ["identity", "translation", "diagonal", "complex_diagonal", "linear"]
)
def test_stacked_operators_apply_each_rows_relation(name: str) -> None:
    """A stack of 3 relations' operators on 4 rows of 5 embeddings equals each relation's
    operator alone on its row (parameters gathered per row)."""
    stack = OPERATORS[name](6, 6, count=3)
    with torch.no_grad():
        for parameter in stack.parameters():
            parameter.copy_(torch.randn_like(parameter))
    lhs, relation = torch.randn(4, 5, 6), torch.tensor([2, 0, 2, 1])
    expected = torch.stack(
        [stack.relation(int(r))(row) for r, row in zip(relation, lhs, strict=True)]
    )
    torch.testing.assert_close(stack(lhs, relation), expected)


def test_comparators_follow_their_formulas_and_all_pairs_agrees_with_aligned() -> None:
    a, b = torch.randn(5, 4), torch.randn(3, 4)
    formulas = {
        "dot": lambda x, y: (x * y).sum(-1),
        "cos": lambda x, y: (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)),
        "l2": lambda x, y: -(x - y).norm(dim=-1),
        "l1": lambda x, y: -(x - y).abs().sum(-1),
    }
    for name, formula in formulas.items():
        comparator = COMPARATORS[name]()
        torch.testing.assert_close(comparator.aligned(a[:3], b), formula(a[:3], b))
        pairs = comparator.all_pairs(a, b)
        torch.testing.assert_close(
            pairs, formula(a.unsqueeze(1), b.unsqueeze(0)), atol=1e-5, rtol=1e-5
        )


def test_softmax_and_ranking_losses_follow_their_formulas() -> None:
    positive = torch.tensor([1.0, -0.5])
    no = float("-inf")  # a slot without a negative
    negative = torch.tensor([[0.0, 2.0, no], [-1.0, 0.5, no]])
    softmax = LOSSES["softmax"]()(positive, negative)
    expected = torch.stack([
        -positive[i] + torch.logsumexp(torch.cat([positive[i : i + 1], negative[i, :2]]), 0)
        for i in range(2)
    ])  # fmt: skip
    torch.testing.assert_close(softmax, expected)
    ranking = LOSSES["ranking"](margin=1.0)(positive, negative)
    hinge = (1.0 - positive.unsqueeze(1) + negative[:, :2]).clamp(min=0).mean(1)
    torch.testing.assert_close(ranking, hinge)
    assert math.isfinite(float(softmax.sum()))


def test_linear_operator_joins_tables_of_different_dims() -> None:
    scorer = scorer_for("linear", dims=(6, 4))
    tables = {"a": torch.randn(9, 6), "b": torch.randn(7, 4)}
    metrics = evaluate_ranking(scorer, tables, np.array([[1, 0, 2], [3, 0, 4]]), None)
    assert metrics["edges"] == 2 and 0 < metrics["mrr"] <= 1
