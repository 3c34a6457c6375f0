"""Ranking on 2 real ranks, each scoring only its own shards (row_wise, table_wise and column_wise
tables), gives the metrics one process gets from whole tables: every comparator, reciprocal or
not, filtered or not; and so does `evaluate` streaming the checkpoint on 1 and on 2 ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, assert_ok, torchrun_env
from tests.workers import sharded_ranking as case
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.eval.ranking import KnownEdges
from tml.projects.twhin.eval.row_sources import CheckpointRows
from tml.projects.twhin.eval.sharded_ranking import evaluate_ranking, rank_edges

WORKER = REPO / "tests" / "workers" / "sharded_ranking.py"
METRICS = ("mrr", "mean_rank", "hits@1", "hits@3", "hits@10", "auc")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The worker's results on 2 ranks, and the checkpoint it wrote."""
    tmp = tmp_path_factory.mktemp("sharded_ranking")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", "2", str(WORKER), "--save-dir", str(tmp / "checkpoints"),
         "--out", str(tmp / "metrics.json")],
        capture_output=True, text=True, timeout=600, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(result)
    return json.loads((tmp / "metrics.json").read_text()), tmp / "checkpoints" / "step_0"


def one_process(checkpoint: Path) -> list[dict[str, Any]]:
    """The reference: whole tables in one process."""
    tables, _ = load_tables(case.config_for(), checkpoint)
    evaluated, known = case.edges()
    results = []
    for setting in case.cases():
        scorer = case.scorer_for(setting["comparator"], setting["reciprocal"])
        metrics = evaluate_ranking(scorer, tables, evaluated,
                                   KnownEdges(known) if setting["filtered"] else None,
                                   auc_negatives=20, seed=3)  # fmt: skip
        results.append({**setting, **metrics})
    return results


def assert_same_metrics(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected) == 16
    for mine, reference in zip(got, expected, strict=True):
        setting = {key: reference[key] for key in ("comparator", "reciprocal", "filtered")}
        assert {key: mine[key] for key in setting} == setting
        assert mine["edges"] == reference["edges"] == 90
        for metric in METRICS:
            assert mine[metric] == pytest.approx(reference[metric], rel=1e-6), (setting, metric)


def test_the_tables_are_really_split_across_the_two_ranks(two_ranks: tuple) -> None:
    results, _ = two_ranks
    rank0, rank1 = results["layouts"]
    # row_wise: each rank holds half the rows; column_wise: each holds half the columns of
    # every row; table_wise: one rank holds it all.
    assert [p[0] for p in rank0["rows"]["pieces"]] == [0] and rank1["rows"]["pieces"][0][0] > 0
    assert rank0["columns"]["splits_columns"] and rank1["columns"]["splits_columns"]
    for layout in (rank0, rank1):
        assert [tuple(p[2]) for p in layout["columns"]["pieces"]] == [(36, 128)]
    assert sorted(len(layout["whole"]["pieces"]) for layout in (rank0, rank1)) == [0, 1]


def test_two_ranks_rank_their_shards_like_one_process_ranks_whole_tables(two_ranks: tuple) -> None:
    results, checkpoint = two_ranks
    expected = one_process(checkpoint)
    assert_same_metrics(results["shards"], expected)
    # Filtering changes the result (the test would not see a filter that does nothing).
    assert any(a["mrr"] != b["mrr"] for a, b in zip(expected[::2], expected[1::2], strict=True))


def test_evaluate_streams_the_checkpoint_on_one_or_two_ranks_with_the_same_metrics(
    two_ranks: tuple,
) -> None:
    results, checkpoint = two_ranks
    expected = one_process(checkpoint)
    assert_same_metrics(results["checkpoint"], expected)  # 2 ranks, windows of 16 rows
    config = case.config_for()
    evaluated, known = case.edges()
    relations = [(lhs, rhs) for lhs, rhs, _ in case.RELATIONS]
    setting = expected[7]  # cos, reciprocal, filtered
    streamed = rank_edges(
        CheckpointRows(checkpoint, config.model, window_rows=7),
        case.scorer_for(setting["comparator"], setting["reciprocal"]), relations, evaluated,
        KnownEdges(known), auc_negatives=20, seed=3,
    )  # fmt: skip
    for metric in METRICS:
        assert streamed[metric] == pytest.approx(setting[metric], rel=1e-6)


def test_evaluate_under_torchrun_equals_evaluate_on_one_process(trained_run: Path) -> None:
    """The command users run: `evaluate` alone, then under torchrun on 2 ranks, on the run that
    training validated (its last validation record ranked the same edges on 2 ranks)."""
    module = ["-m", "tml.projects.twhin.evaluate", f"--save_dir={trained_run}", "--split", "valid"]
    alone = subprocess.run([sys.executable, *module], capture_output=True, text=True,
                           timeout=300, env=torchrun_env(), cwd=REPO)  # fmt: skip
    assert_ok(alone)
    assert "ranking" in alone.stderr and "edges/s" in alone.stderr, "it says what it does"
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *module], capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(ranks)
    one, two = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (alone, ranks))
    assert ranks.stdout.count('"split": "valid"') == 1, "rank 0 alone prints the result"
    assert one["edges"] == two["edges"] > 0
    for metric in METRICS:
        assert two[metric] == pytest.approx(one[metric], rel=1e-6), metric
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").open()]
    last = [r for r in records if r.get("split") == "validation"][-1]
    assert set(last["peak_rss_mb"]) == {"rank0", "rank1"} and last["ranked_edges"] > 0
