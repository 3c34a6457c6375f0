"""The next version of a graph, end to end: a 2-rank run's checkpoint warm-starts a 1-rank run
whose row-wise tables grew, relations carried by name, new rows placed by their neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.conftest import assert_ok, embeddings, run_torchrun, write_config
from tml.core import safe_dcp
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.tools import synthetic
from tml.projects.twhin.training.neighbor_init import PLACED_NORM

OLD = {"user": 2000, "tweet": 3000, "advertiser": 100}
MOMENTUM = "optim.state.tables.tables.embedding_bags.user.weight.user.momentum1"


def relation_vectors(save_dir: Path) -> dict[str, np.ndarray]:
    rows = pq.read_table(save_dir / "embeddings" / "relations.parquet").to_pylist()
    return {
        row["name"]: np.asarray(json.loads(row["parameters"]).get("translation", []))
        for row in rows
    }


def expected_neighbor_means(
    v1: dict[str, np.ndarray], edges: np.ndarray, relations: list[dict], table: str
) -> tuple[np.ndarray, np.ndarray]:
    """neighbor_mean for translation operators, as training/neighbor_init.py defines it: an
    old neighbour contributes its row, moved from its table's mean to this table's mean (the
    translation cancels); means are scaled to PLACED_NORM x the table's mean row norm.
    (rows, placed mask)"""
    means = {name: rows.mean(0) for name, rows in v1.items()}
    new = int(len(v1[table]) * 0.1)
    sums, counts = np.zeros((new, v1[table].shape[1])), np.zeros(new)
    for lhs, rel, rhs in edges:
        source, target = relations[rel]["lhs"], relations[rel]["rhs"]
        if target == table and rhs >= OLD[table] and lhs < OLD[source]:
            sums[rhs - OLD[table]] += v1[source][lhs] - means[source] + means[table]
            counts[rhs - OLD[table]] += 1
        if source == table and lhs >= OLD[table] and rhs < OLD[target]:
            sums[lhs - OLD[table]] += v1[target][rhs] - means[target] + means[table]
            counts[lhs - OLD[table]] += 1
    placed = counts > 0
    rows = sums[placed] / counts[placed, None]
    norm = PLACED_NORM * np.linalg.norm(v1[table], axis=1).mean()
    return rows / np.linalg.norm(rows, axis=1, keepdims=True) * norm, placed


@pytest.fixture(scope="module")
def grown_graph(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grown") / "v2"
    synthetic.grow(str(out), str(small_graph), new_fraction=0.1, rows_per_file=20_000,
                   row_group_size=5_000)  # fmt: skip
    return out


def test_two_rank_checkpoint_warm_starts_a_one_rank_run_on_grown_row_wise_tables(
    trained_run: Path, grown_graph: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    checkpoint = trained_run / "checkpoints" / "step_354"
    config["training"].update(initial_checkpoint_dir=str(checkpoint), num_train_steps=1)
    config["train_data"]["data_root"] = str(grown_graph / "train")
    config["validation_data"] = None
    for table in config["model"]["embeddings"]["tables"]:
        table.update(num_embeddings=int(OLD[table["name"]] * 1.1), sharding_type="row_wise",
                     optimizer={"rowwise_adagrad": {"lr": 0.0}})  # fmt: skip
    config["model"]["translation_optimizer"] = {"adagrad": {"lr": 0.0}}  # has state to carry
    relations = config["model"]["relations"]  # fav and retweet swap places; a new relation
    relations[1], relations[2] = relations[2], relations[1]
    relations.append({"name": "mentions", "lhs": "user", "rhs": "user", "operator": "translation"})
    config["warm_start"] = {"new_rows": "neighbor_mean"}
    result = run_torchrun(1, write_config(tmp_path / "v2.yaml", config), tmp_path / "v2")
    assert_ok(result)
    assert "user: 2,000 old rows carried, 200 new rows (neighbor_mean" in result.stdout
    assert "optimizer state carried for the old rows" in result.stdout
    assert "the optimizer state of 4 of 4 carried relations came with them" in result.stdout

    old_config = TwhinConfig.model_validate(
        yaml.safe_load((trained_run / "config.yaml").read_text())
    )
    v1 = {name: t.numpy() for name, t in load_tables(old_config, checkpoint)[0].items()}
    edges = np.concatenate([
        np.stack([pq.read_table(f).column(c).to_numpy() for c in ("lhs", "rel", "rhs")], 1)
        for f in sorted((grown_graph / "train").glob("*.parquet"))
    ])  # fmt: skip
    for table in ("user", "tweet"):
        v2 = embeddings(tmp_path / "v2", table)
        np.testing.assert_array_equal(v2[: OLD[table]], v1[table])  # old rows, bit for bit
        expected, placed = expected_neighbor_means(v1, edges, relations, table)
        assert placed.mean() > 0.5
        np.testing.assert_allclose(v2[OLD[table] :][placed], expected, rtol=1e-4, atol=1e-5)

    before, after = relation_vectors(trained_run), relation_vectors(tmp_path / "v2")
    for name in ("follows", "fav", "retweet", "click"):  # by name, not by position
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(before["fav"], before["retweet"])
    assert not after["mentions"].any(), "a new relation starts fresh (translation: zeros)"

    momentum = {}
    for run in (checkpoint, tmp_path / "v2" / "checkpoints" / "step_1"):
        rows = 2000 if run == checkpoint else 2200
        momentum[run] = torch.empty(rows)
        safe_dcp.load({MOMENTUM: momentum[run]}, run, no_dist=True)
    old, new = (
        momentum[checkpoint].numpy(),
        momentum[tmp_path / "v2" / "checkpoints" / "step_1"].numpy(),
    )
    assert (new[:2000] >= old).all() and np.mean(new[:2000] == old) > 0.5, "carried, then summed"
    assert old.min() > 0 and np.mean(new[2000:] == 0) > 0.5, "new rows start fresh"
