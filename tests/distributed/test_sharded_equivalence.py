"""Sharding must not change the math: 1 rank and 2 ranks give the same trained weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, assert_ok, torchrun_env
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.config import TwhinConfig

WORKER = REPO / "tests" / "workers" / "sharded_training.py"

CONFIG = {
    "model": {
        "translation_optimizer": {"sgd": {"lr": 0.1}},
        "embeddings": {
            "tables": [
                {"name": "user", "num_embeddings": 64, "embedding_dim": 8,
                 "optimizer": {"rowwise_adagrad": {"lr": 0.1}}},
                {"name": "tweet", "num_embeddings": 48, "embedding_dim": 8,
                 "optimizer": {"sgd": {"lr": 0.2}}},
            ]
        },
        "relations": [
            {"name": "follows", "lhs": "user", "rhs": "user"},
            {"name": "fav", "lhs": "user", "rhs": "tweet"},
        ],
    },
    "train_data": {"data_root": "unused", "per_replica_batch_size": 32,
                   "global_negatives": 4, "in_batch_negatives": 0},
}  # fmt: skip


def train(tmp_path: Path, nproc: int, sharding: str) -> tuple[tuple[dict, dict], tuple[dict, dict]]:
    """((tables, dense) before training, (tables, dense) after) of a run on `nproc` ranks."""
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    for table in config["model"]["embeddings"]["tables"]:
        table["sharding_type"] = sharding
    config_file = tmp_path / f"config_{nproc}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    save_dir = tmp_path / f"run_{nproc}"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", str(nproc), str(WORKER), "--config", str(config_file),
         "--save-dir", str(save_dir)],
        capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(result)
    parsed = TwhinConfig.model_validate(config)
    return load_tables(parsed, save_dir / "step_0"), load_tables(parsed, save_dir / "step_6")


@pytest.mark.parametrize("sharding", ["table_wise", "row_wise"])
def test_one_and_two_ranks_train_the_same_weights(tmp_path: Path, sharding: str) -> None:
    (initial, _), (tables_1, dense_1) = train(tmp_path, 1, sharding)
    (initial_2, _), (tables_2, dense_2) = train(tmp_path, 2, sharding)
    for name in tables_1:
        torch.testing.assert_close(initial_2[name], initial[name], rtol=0, atol=0)
        moved = (tables_1[name] - initial[name]).abs().max()
        assert moved > 1e-3, f"{name} did not train"
        torch.testing.assert_close(tables_2[name], tables_1[name], rtol=0, atol=2e-6)
    for key in dense_1:
        assert dense_1[key].abs().max() > 0, f"{key} did not train"
        torch.testing.assert_close(dense_2[key], dense_1[key], rtol=0, atol=2e-6)
