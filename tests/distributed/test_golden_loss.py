"""configs/local.yaml still trains to the recorded loss curve, bit for bit.

tests/assets/local_loss_curve.json holds the train and validation losses of `make run-local`
(2 ranks, gloo, CPU). CPU runs are bit-exact, so a change that moves any loss, even in the last
digit, changed what training computes: data order, negatives, scoring, the loss or the update.
By default the first 200 steps are compared (four log records and one validation);
`TML_GOLDEN_STEPS=980` compares the whole run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, assert_ok, run_torchrun, write_config
from tml.projects.twhin.tools import synthetic

GOLDEN = REPO / "tests" / "assets" / "local_loss_curve.json"
STEPS = int(os.environ.get("TML_GOLDEN_STEPS", "200"))


@pytest.fixture(scope="module")
def default_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The graph of `make data`: the generator's defaults give byte-identical files."""
    out = tmp_path_factory.mktemp("golden") / "synthetic"
    synthetic.generate(str(out))
    return out


def test_local_config_reproduces_the_recorded_loss_curve(
    default_graph: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["train_data"]["data_root"] = str(default_graph / "train")
    config["validation_data"]["data_root"] = str(default_graph / "validation")
    config["training"]["num_train_steps"] = STEPS
    # Ranking (rank 0, after the loss pass) changes no loss; leaving it out saves its time.
    config["evaluation"] = {"ranking": False}
    # The recording ran one thread per rank; more threads may sum in another order.
    config["runtime"]["threads_per_rank"] = 1
    result = run_torchrun(2, write_config(tmp_path / "local.yaml", config), tmp_path / "run")
    assert_ok(result)

    golden = json.loads(GOLDEN.read_text())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    for split, key in (("train", "train_loss"), ("validation", "validation_loss")):
        got = [
            {"step": r["step"], "loss": r["loss"]}
            for r in records
            if r.get("split", "train") == split
        ]
        expected = [r for r in golden[key] if r["step"] <= STEPS]
        assert got, f"no {split} records"
        assert got == expected, f"{split} losses moved from {GOLDEN.name}"
