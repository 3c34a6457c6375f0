"""A small knowledge graph for tune tests (imported with import_kg) and tune command helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from tests.conftest import REPO, assert_ok, torchrun_env
from tests.helpers_data import write_group_graph

TUNE = [sys.executable, "-m", "tml.projects.twhin.tune"]


def make_graph(out: Path, epochs: int = 6) -> Path:
    """`write_group_graph`'s knowledge graph imported with import_kg at dim 16, to train
    `epochs` epochs (about 15 steps each) with a validation every 2; returns the base config."""
    write_group_graph(out)
    imported = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.import_kg", "--out", str(out / "graph"),
         "--train", str(out / "train.tsv"), "--valid", str(out / "valid.tsv"),
         "--test", str(out / "test.tsv"), "--operator", "complex_diagonal", "--dim", "16"],
        capture_output=True, text=True, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(imported)
    config = yaml.safe_load((out / "graph" / "config.yaml").read_text())
    per_epoch = config["training"]["train_log_every_n"]  # the importer logs once per epoch
    config["training"].update(
        num_epochs=epochs, num_train_steps=epochs * per_epoch, eval_log_every_n=2 * per_epoch,
        checkpoint_every_n=2 * per_epoch,
    )  # fmt: skip
    base = out / "base.yaml"
    base.write_text(yaml.safe_dump(config, sort_keys=False))
    return base


def write_space(path: Path, *parameters: dict) -> Path:
    path.write_text(yaml.safe_dump({"parameters": list(parameters)}, sort_keys=False))
    return path


# A small space that trains in seconds: the table's learning rate and the epochs.
LR = {"name": "lr", "field": "model.embeddings.tables[entity].optimizer.lr", "type": "float",
      "low": 0.05, "high": 0.5, "log": True}  # fmt: skip


def start_tune(base: Path, save_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    """A tune worker in its own session (a test can kill it alone, as a lost machine would)."""
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*TUNE, f"--config_yaml_path={base}", f"--save_dir={save_dir}", *args],
        stdout=handle, stderr=subprocess.STDOUT, env=torchrun_env(), cwd=REPO,
        start_new_session=True,
    )  # fmt: skip


def run_tune(base: Path, save_dir: Path, *args: str, timeout: float = 300):
    return subprocess.run(
        [*TUNE, f"--config_yaml_path={base}", f"--save_dir={save_dir}", *args],
        capture_output=True, text=True, env=torchrun_env(), cwd=REPO, timeout=timeout,
    )  # fmt: skip


def load_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def runs_in(log: str) -> int:
    """How many training runs a trial's train.log holds (each ends with `done in`)."""
    return log.count("] done in ")
