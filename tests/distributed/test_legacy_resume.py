"""A run whose checkpoint predates stacked relation parameters (tests/assets/legacy_run: one
tensor per relation, written by an earlier version on 2 ranks) resumes, optimizer included, and
warm-starts another run, with today's code on 2 ranks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.conftest import REPO, assert_ok, run_torchrun, write_config

LEGACY = REPO / "tests" / "assets" / "legacy_run"


def relation_parameters(save_dir: Path) -> dict[str, dict]:
    rows = pq.read_table(save_dir / "embeddings" / "relations.parquet").to_pylist()
    return {row["name"]: json.loads(row["parameters"]) for row in rows}


def frozen_relations(config: dict, steps: int) -> dict:
    """`config` trained to `steps` with the relation parameters' learning rate at 0, so the
    parameters a run ends with are those it started from."""
    config["training"]["num_train_steps"] = steps
    config["model"]["translation_optimizer"] = {"adagrad": {"lr": 0.0}}
    return config


def test_old_checkpoint_resumes_and_warm_starts(tmp_path: Path) -> None:
    shutil.copytree(LEGACY, tmp_path / "legacy")
    save_dir = tmp_path / "legacy" / "run"
    then = relation_parameters(save_dir)
    config = yaml.safe_load((save_dir / "config.yaml").read_text())
    config["train_data"]["data_root"] = str(tmp_path / "legacy" / "data" / "train")

    resumed = frozen_relations(config, steps=8)
    result = run_torchrun(2, write_config(tmp_path / "resume.yaml", resumed), save_dir)
    assert_ok(result)
    assert f"resumed from {save_dir / 'checkpoints' / 'step_6'} at step 6" in result.stdout
    assert "skipping checkpoint" not in result.stdout + result.stderr
    assert relation_parameters(save_dir) == then
    saved = (save_dir / "checkpoints" / "step_8" / ".metadata").read_bytes()
    assert b"operator_groups" in saved and b"scorer.operators." not in saved

    warm = frozen_relations(config, steps=1)
    warm["training"]["initial_checkpoint_dir"] = str(LEGACY / "run" / "checkpoints" / "step_6")
    result = run_torchrun(2, write_config(tmp_path / "warm.yaml", warm), tmp_path / "warm")
    assert_ok(result)
    assert "warm-started" in result.stdout
    assert relation_parameters(tmp_path / "warm") == then
