"""Using a trained run: streaming export, neighbours by the trained score, TensorBoard norms and
the run report, all on the session's 2-rank synthetic run (tests/conftest.py: trained_run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed.checkpoint as dcp
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO, assert_ok, torchrun_env
from tml.core.config import load_config
from tml.projects.twhin.artifacts.checkpoints import iter_table_rows, load_tables
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.eval.evaluator import scorer_with_state
from tml.projects.twhin.run_report import write_report
from tml.projects.twhin.search.neighbors import find_neighbors


def run_config(save_dir: Path) -> TwhinConfig:
    return load_config(TwhinConfig, save_dir / "config.yaml")


def user_communities(graph: Path) -> np.ndarray:
    data = pq.read_table(graph / "communities.parquet").to_pydict()
    labels = np.full(2000, -1)
    for table, row, community in zip(*data.values(), strict=True):
        if table == "user":
            labels[row] = community
    return labels


def test_tables_stream_in_row_windows_cut_at_the_saved_shards(trained_run: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "step_200"
    config = run_config(trained_run)
    tables, _ = load_tables(config, checkpoint)
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata()
    for table in config.model.embeddings.tables:
        windows = list(iter_table_rows(checkpoint, table, max_rows=700))
        assert all(len(rows) <= 700 for _, rows in windows)
        starts = {start for start, _ in windows}
        chunks = metadata.state_dict_metadata[f"model.tables.embedding_bags.{table.name}.weight"]
        assert {chunk.offsets[0] for chunk in chunks.chunks} <= starts, "cut at shard starts"
        torch.testing.assert_close(torch.cat([rows for _, rows in windows]), tables[table.name])


def test_neighbours_of_a_user_are_mostly_its_community(
    trained_run: Path, small_graph: Path
) -> None:
    labels = user_communities(small_graph)
    queries = [str(q) for q in np.random.default_rng(0).choice(2000, 40, replace=False)]
    result = find_neighbors(trained_run, "user", queries, k=10)
    purity = np.mean([
        labels[n["id"]] == labels[entry["query"]["id"]]
        for entry in result["results"] for n in entry["neighbors"]
    ])  # fmt: skip
    chance = sum((labels == c).mean() ** 2 for c in np.unique(labels))
    assert purity > 0.6 and purity > 5 * chance, (purity, chance)
    assert all(
        n["id"] != entry["query"]["id"] for entry in result["results"] for n in entry["neighbors"]
    ), "a query is not its own neighbour"
    # The command line prints the same thing as JSON.
    command = [sys.executable, "-m", "tml.projects.twhin.neighbors", f"--save_dir={trained_run}",
               "--table", "user", "--query", queries[0], "-k", "10", "--json"]  # fmt: skip
    printed = subprocess.run(command, capture_output=True, text=True, env=torchrun_env(), cwd=REPO)
    assert_ok(printed)
    alone, batched = json.loads(printed.stdout)["results"][0], result["results"][0]
    assert alone["query"] == batched["query"]
    assert [n["id"] for n in alone["neighbors"]] == [n["id"] for n in batched["neighbors"]]
    np.testing.assert_allclose([n["score"] for n in alone["neighbors"]],
                               [n["score"] for n in batched["neighbors"]], rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("table", ["user", "tweet"])
def test_relation_neighbours_are_the_best_by_the_trained_score(
    trained_run: Path, table: str
) -> None:
    config = run_config(trained_run)
    tables, dense = load_tables(config, trained_run / "checkpoints" / "step_354")
    scorer = scorer_with_state(config, dense)
    fav = [r.name for r in config.model.relations].index("fav")
    query = 7
    with torch.no_grad():  # brute force from the checkpoint: score(user, fav, tweet) for all
        if table == "user":
            scores = scorer.comparator.all_pairs(
                scorer.operators[fav](tables["user"][query : query + 1]), tables["tweet"]
            )[0]
        else:
            scores = scorer.comparator.all_pairs(
                tables["tweet"][query : query + 1], scorer.operators[fav](tables["user"])
            )[0]
    best = scores.topk(5)
    result = find_neighbors(trained_run, table, [str(query)], relation="fav", k=5)
    neighbours = result["results"][0]["neighbors"]
    assert result["target"] == ("tweet" if table == "user" else "user")
    assert [n["id"] for n in neighbours] == best.indices.tolist()
    np.testing.assert_allclose([n["score"] for n in neighbours], best.values, rtol=1e-5)


def test_faiss_index_is_built_once_and_agrees_with_exact_search(trained_run: Path) -> None:
    exact = find_neighbors(trained_run, "user", ["3"], relation="fav", k=10, index="exact")
    built = find_neighbors(trained_run, "user", ["3"], relation="fav", k=10, index="faiss",
                           nlist=8, nprobe=8)  # fmt: skip
    reused = find_neighbors(trained_run, "user", ["3"], relation="fav", k=10, index="faiss",
                            nlist=8, nprobe=8)  # fmt: skip
    assert "built now" in built["search"] and "reused" in reused["search"]
    assert RunDir(trained_run).faiss_index("tweet", "dot").is_file()
    ids = [[n["id"] for n in r["results"][0]["neighbors"]] for r in (exact, built, reused)]
    assert ids[0] == ids[1] == ids[2]


def test_checkpoints_log_embedding_norms_to_tensorboard(trained_run: Path) -> None:
    records = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    norms = [r for r in records if r.get("split") == "embeddings"]
    assert [r["step"] for r in norms] == [100, 200, 300, 354]
    exported = pq.read_table(trained_run / "embeddings" / "user.parquet").column("embedding")
    user_norms = np.linalg.norm(np.stack(exported.to_numpy(zero_copy_only=False)), axis=1)
    last = norms[-1]["user"]
    assert last["mean_norm"] == pytest.approx(user_norms.mean(), rel=1e-5)
    assert last["max_norm"] == pytest.approx(user_norms.max(), rel=1e-5)
    assert last["min_norm"] == pytest.approx(user_norms.min(), rel=1e-5)
    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"embeddings/user/mean_norm", "train/loss", "train/edges_per_s", "validation/mrr",
            "train/lr/user"} <= tags  # fmt: skip
    log = (trained_run.parent / "train.log").read_text()
    assert "table user: 2,000 x 16 fp32" in log and "validation every 100 steps" in log


def test_report_writes_readable_plots_and_a_page_with_final_metrics(trained_run: Path) -> None:
    page = write_report(trained_run, sample=500)
    report = page.parent
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == sorted([
        "loss.png", "eval_metrics.png", "throughput.png", "learning_rates.png",
        "norms_over_steps.png", "norm_histograms.png", "projection.png",
    ])  # fmt: skip
    for name in pngs:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = imread(report / name).shape
        assert height >= 300 and width >= 400, name
    html = page.read_text()
    assert all(f"src='{name}'" in html for name in pngs)
    last_validation = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
        if '"validation"' in line
    ][-1]  # fmt: skip
    assert f"{last_validation['mrr']:.4g}" in html and "Last validation (step 354)" in html
    assert "per_replica_batch_size" in html, "the config is on the page"
