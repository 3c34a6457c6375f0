"""End to end through the real command: torchrun with 2 gloo ranks on the synthetic graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import (
    assert_ok,
    assert_same_embeddings,
    embeddings,
    kill_job,
    run_torchrun,
    small_config,
    start_torchrun,
    wait_for_first_checkpoint,
    write_config,
)  # fmt: skip
from tml.core.checkpoint import complete_checkpoints
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.artifacts.export import export
from tml.projects.twhin.config import TwhinConfig


def read_metrics(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]


def read_metrics_split(save_dir: Path, split: str) -> list[dict]:
    return [r for r in read_metrics(save_dir) if r.get("split") == split]


def test_profile_and_memory_say_where_the_time_and_memory_go(trained_run: Path) -> None:
    for rank in (0, 1):
        profile = json.loads((trained_run / "profile" / f"rank_{rank}.json").read_text())
        assert profile["steps"] == 5
        stages = profile["ms_per_step"]
        assert set(stages) == {
            "data", "lookup", "scoring", "backward_update", "communication", "other"
        }  # fmt: skip
        for stage in ("lookup", "scoring", "backward_update", "communication"):
            assert stages[stage] > 0, stage
        assert sum(stages.values()) <= 2 * profile["wall_ms_per_step"]  # self times, no overlap
    assert (trained_run / "profile" / "trace_rank_0.json").stat().st_size > 0
    train = [r for r in read_metrics(trained_run) if "split" not in r]
    assert set(train[-1]["peak_rss_mb"]) == {"rank0", "rank1"}
    assert all(100 < mib < 8000 for mib in train[-1]["peak_rss_mb"].values())
    loop_s = [r["loop_s"] for r in train]
    assert loop_s == sorted(loop_s) and loop_s[0] > 0


def test_run_leaves_checkpoints_metrics_and_embeddings(trained_run: Path) -> None:
    steps = [
        int(p.name.removeprefix("step_")) for p in complete_checkpoints(trained_run / "checkpoints")
    ]
    # 58,800 train edges / (250 x 2 ranks) = 118 steps per epoch; checkpoint_max_to_keep is 3.
    assert steps == [200, 300, 354]
    records = read_metrics(trained_run)
    train = [r for r in records if "split" not in r]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"], "loss did not fall"
    assert all(r["edges_per_s"] > 0 and "eta_s" in r and "lr" in r for r in train)
    assert set(train[0]["lr"]) == {"user", "tweet", "advertiser", "relations"}
    validation = [r for r in records if r.get("split") == "validation"]
    assert len(validation) >= 2 and validation[-1]["auc"] > 0.8
    assert validation[-1]["loss"] < validation[0]["loss"]
    assert len(list((trained_run / "tensorboard").glob("events.out.tfevents.*"))) == 1, "rank 0"
    # Ranks leave with os._exit (no interpreter teardown): the event file must be complete.
    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    assert events.Scalars("train/loss")[-1].step == train[-1]["step"]
    for table, rows in (("user", 2000), ("tweet", 3000), ("advertiser", 100)):
        schema = pq.read_schema(trained_run / "embeddings" / f"{table}.parquet")
        assert str(schema.field("id").type) == "int64"
        assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[16]"
        assert embeddings(trained_run, table).shape == (rows, 16)
    relations = pq.read_table(trained_run / "embeddings" / "relations.parquet").to_pylist()
    assert [r["name"] for r in relations] == ["follows", "fav", "retweet", "click"]
    translation = json.loads(relations[1]["parameters"])["translation"]
    assert len(translation) == 16 and np.abs(translation).max() > 0


def test_same_community_users_are_nearest_neighbours(trained_run: Path, small_graph: Path) -> None:
    users = embeddings(trained_run, "user")
    communities = pq.read_table(small_graph / "communities.parquet").to_pydict()
    labels = np.full(len(users), -1)
    for table, row, community in zip(*communities.values(), strict=True):
        if table == "user":
            labels[row] = community
    unit = users / np.linalg.norm(users, axis=1, keepdims=True)
    queries = np.random.default_rng(0).choice(len(users), 300, replace=False)
    similarity = unit[queries] @ unit.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    top10 = np.argsort(-similarity, axis=1)[:, :10]
    recall = (labels[top10] == labels[queries][:, None]).mean()
    chance = sum((labels == c).mean() ** 2 for c in np.unique(labels))
    assert recall > 0.6 and recall > 5 * chance, (recall, chance)


def test_export_cli_matches_checkpoint_for_any_step(trained_run: Path) -> None:
    config = TwhinConfig.model_validate(yaml.safe_load((trained_run / "config.yaml").read_text()))
    checkpoint = trained_run / "checkpoints" / "step_200"
    tables, _ = load_tables(config, checkpoint)
    copy = trained_run.parent / "export_copy"
    copy.mkdir()
    (copy / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    (copy / "checkpoints").symlink_to(trained_run / "checkpoints")
    export(copy, "step_200")
    exported = embeddings(copy, "tweet")
    ids = pq.read_table(copy / "embeddings" / "tweet.parquet").column("id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(len(exported)))
    np.testing.assert_array_equal(exported, tables["tweet"].numpy())
    assert not np.array_equal(exported, embeddings(trained_run, "tweet")), (
        "step_200 is not the final step"
    )


def test_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
    small_graph: Path, tmp_path: Path
) -> None:
    config = small_config(small_graph, num_epochs=2, checkpoint_every_n=20)
    config_file = write_config(tmp_path / "config.yaml", config)
    # The reference run also evaluates every 30 steps: evaluation must not disturb training.
    evaluating = small_config(small_graph, num_epochs=2, checkpoint_every_n=20, eval_log_every_n=30)
    reference = write_config(tmp_path / "evaluating.yaml", evaluating)
    assert_ok(run_torchrun(2, reference, tmp_path / "uninterrupted"))
    assert len(read_metrics_split(tmp_path / "uninterrupted", "validation")) > 5

    save_dir = tmp_path / "interrupted"
    job = start_torchrun(2, config_file, save_dir, tmp_path / "first.log")
    try:
        wait_for_first_checkpoint(job, save_dir, tmp_path / "first.log")
    finally:
        kill_job(job)  # SIGKILL the whole job, as a crash or node loss would
    survived = complete_checkpoints(save_dir / "checkpoints")
    assert survived, (tmp_path / "first.log").read_text()[-3000:]
    assert not (save_dir / "embeddings").exists(), "the job finished before it was killed"

    result = run_torchrun(2, config_file, save_dir)
    assert_ok(result)
    assert f"resumed from {survived[-1]}" in result.stdout
    assert_same_embeddings(save_dir, tmp_path / "uninterrupted")


def test_bad_edge_row_stops_the_job_with_file_and_row(small_graph: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    data = tmp_path / "edges"
    data.mkdir()
    table = pq.read_table(next((small_graph / "train").glob("*.parquet"))).slice(0, 1000)
    rhs = table.column("rhs").to_numpy().copy()
    rel = table.column("rel").to_numpy()
    rhs[700] = 10**9  # no table is that large
    pq.write_table(
        table.set_column(2, "rhs", pa.array(rhs)), data / "part-0.parquet", row_group_size=500
    )
    config = small_config(small_graph)
    config["train_data"]["data_root"] = str(data)
    config["validation_data"] = None
    result = run_torchrun(2, write_config(tmp_path / "config.yaml", config), tmp_path / "run")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.stderr[-3000:]
    assert "part-0.parquet" in errors[0] and "row group 1" in errors[0] and "row 700" in errors[0]
    assert f"rel {rel[700]}" in errors[0] or f"relation {rel[700]}" in errors[0]


def test_initial_checkpoint_dir_warm_starts_the_weights(trained_run: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    config["training"].update(
        initial_checkpoint_dir=str(trained_run / "checkpoints" / "step_200"), num_train_steps=1
    )
    frozen = {"rowwise_adagrad": {"lr": 0.0}}
    for table in config["model"]["embeddings"]["tables"]:
        table["optimizer"] = frozen
    config["model"]["translation_optimizer"] = {"sgd": {"lr": 0.0}}
    result = run_torchrun(2, write_config(tmp_path / "config.yaml", config), tmp_path / "warm")
    assert_ok(result)
    assert "warm-started" in result.stdout
    parsed = TwhinConfig.model_validate(config)
    tables, _ = load_tables(parsed, trained_run / "checkpoints" / "step_200")
    for name, weights in tables.items():
        np.testing.assert_array_equal(embeddings(tmp_path / "warm", name), weights.numpy())
