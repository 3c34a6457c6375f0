"""Early stopping end to end: real 2-rank torchrun jobs on the small synthetic graph.

The runs learn for 60 steps, then the tables' learning rate jumps from 0.05 to 50 (a piecewise
schedule), which scatters the embeddings: validation MRR rises to step 60 and then collapses and
stays down, a plateau below an earlier best, the same on every run (training is deterministic).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import (
    REPO,
    RUN_PY,
    assert_ok,
    embeddings,
    kill_job,
    run_torchrun,
    small_config,
    start_torchrun,
    torchrun_env,
    worker_pid,
    write_config,
)  # fmt: skip
from tml.core.checkpoint import complete_checkpoints, read_best, read_trainer_state
from tml.projects.twhin import evaluate, export
from tml.projects.twhin.artifacts.checkpoints import load_tables
from tml.projects.twhin.config import VALIDATION_METRICS, TwhinConfig

COLLAPSE_AT = 60  # the step the learning rate jumps
PATIENCE = 3
EVAL_EVERY = 20
STOP_AT = COLLAPSE_AT + PATIENCE * EVAL_EVERY  # best at 60; 80, 100 and 120 do not beat it


def collapsing_config(graph: Path) -> dict[str, Any]:
    config = small_config(
        graph, num_epochs=2, eval_log_every_n=EVAL_EVERY, checkpoint_every_n=EVAL_EVERY,
        checkpoint_max_to_keep=1, early_stopping={"metric": "mrr", "patience": PATIENCE},
    )  # fmt: skip
    for table in config["model"]["embeddings"]["tables"]:
        table["optimizer"]["learning_rate"] = {
            "piecewise_constant": {
                "learning_rate_boundaries": [COLLAPSE_AT], "learning_rate_values": [0.05, 50.0],
            }
        }  # fmt: skip
    return config


def validations(save_dir: Path) -> list[dict[str, Any]]:
    lines = (save_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == "validation"]


@pytest.fixture(scope="module")
def stopped_run(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted 2-rank run with early stopping; its log is `train.log` beside it."""
    tmp = tmp_path_factory.mktemp("early_stopping")
    config = write_config(tmp / "config.yaml", collapsing_config(small_graph))
    result = run_torchrun(2, config, tmp / "run")
    assert_ok(result)
    (tmp / "train.log").write_text(result.stdout + result.stderr)
    return tmp / "run"


def test_a_plateau_stops_the_run_and_the_best_checkpoint_is_kept_and_exported(
    stopped_run: Path,
) -> None:
    log = (stopped_run.parent / "train.log").read_text()
    records = validations(stopped_run)
    mrr = {r["step"]: r["mrr"] for r in records}
    assert set(VALIDATION_METRICS) <= set(records[0]), "a metric early stopping accepts is missing"
    # Stopped when patience ran out, long before the 236 steps of its 2 epochs.
    assert sorted(mrr) == list(range(EVAL_EVERY, STOP_AT + 1, EVAL_EVERY))
    assert max(mrr, key=mrr.__getitem__) == COLLAPSE_AT
    assert mrr[STOP_AT] < 0.5 * mrr[COLLAPSE_AT], "the last evaluation is not the worse one"
    assert f"early stopping at step {STOP_AT} of 236: validation mrr has not improved" in log
    # The best is kept beside the newest though checkpoint_max_to_keep is 1, and named.
    checkpoints = stopped_run / "checkpoints"
    assert [p.name for p in complete_checkpoints(checkpoints)] == [
        f"step_{COLLAPSE_AT}", f"step_{STOP_AT}"
    ]  # fmt: skip
    best = read_best(checkpoints)
    assert best is not None and best["checkpoint"] == f"step_{COLLAPSE_AT}"
    assert best["metrics"]["mrr"] == mrr[COLLAPSE_AT] and best["metrics"]["hits@10"] > 0
    # Both ranks stopped at the same step: each wrote its part of that step's checkpoint.
    last = checkpoints / f"step_{STOP_AT}"
    assert {"rank_0.pt", "rank_1.pt", "__0_0.distcp", "__1_0.distcp"} <= set(os.listdir(last))
    assert read_trainer_state(last)["early_stopping"]["evaluations_since_best"] == PATIENCE
    # The export is the best checkpoint's, and the log says so.
    assert (
        f"exporting the best checkpoint, {checkpoints / f'step_{COLLAPSE_AT}'} (validation mrr "
        f"{mrr[COLLAPSE_AT]:.4f}), not the last (step_{STOP_AT})" in log
    )
    config = TwhinConfig.model_validate(yaml.safe_load((stopped_run / "config.yaml").read_text()))
    best_tables, _ = load_tables(config, checkpoints / f"step_{COLLAPSE_AT}")
    last_tables, _ = load_tables(config, last)
    for table in ("user", "tweet", "advertiser"):
        np.testing.assert_array_equal(embeddings(stopped_run, table), best_tables[table].numpy())
        assert not np.array_equal(best_tables[table].numpy(), last_tables[table].numpy())


def test_evaluate_and_export_take_checkpoint_best(
    stopped_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main(["--save_dir", str(stopped_run), "--checkpoint", "best"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"] == f"step_{COLLAPSE_AT}" and result["mrr"] > 0.1
    # Another save dir over the same checkpoints, so the run's own export stays as it is.
    (tmp_path / "config.yaml").write_text((stopped_run / "config.yaml").read_text())
    (tmp_path / "checkpoints").symlink_to(stopped_run / "checkpoints")
    assert (
        export.main(["--save_dir", str(tmp_path), "--checkpoint", "best", "--format", "npy"]) == 0
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "embeddings" / "user.npy"), embeddings(stopped_run, "user")
    )
    assert export.main(["--save_dir", str(tmp_path / "none"), "--checkpoint", "best"]) == 2


def test_a_killed_and_restarted_run_stops_at_the_same_step_as_one_never_killed(
    stopped_run: Path, small_graph: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", collapsing_config(small_graph))
    save_dir, log = tmp_path / "run", tmp_path / "train.log"
    job = start_torchrun(2, config, save_dir, log, max_restarts=1)
    try:  # SIGKILL rank 1 once a checkpoint holds a validation that did not improve
        deadline = time.monotonic() + 120
        while not patience_spent(save_dir):
            assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        os.kill(worker_pid(job, rank=1), signal.SIGKILL)  # torchrun restarts both workers
        assert job.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        kill_job(job)
    output = log.read_text()
    resumed = rf"early stopping resumed: best validation mrr \S+ at step {COLLAPSE_AT}, [12] of 3 "
    assert re.search(resumed, output), output[-3000:]  # the count went on from the checkpoint
    assert f"early stopping at step {STOP_AT} of 236" in output, output[-3000:]
    assert read_best(save_dir / "checkpoints") == read_best(stopped_run / "checkpoints")
    mrr = {r["step"]: r["mrr"] for r in validations(save_dir)}
    assert mrr[STOP_AT] == {r["step"]: r["mrr"] for r in validations(stopped_run)}[STOP_AT]
    for table in ("user", "tweet", "advertiser"):
        np.testing.assert_array_equal(embeddings(save_dir, table), embeddings(stopped_run, table))
    # The same command once more (here on one process): the run is over, it only exports again.
    again = subprocess.run(
        [sys.executable, str(RUN_PY), f"--config_yaml_path={config}", f"--save_dir={save_dir}"],
        capture_output=True, text=True, timeout=300, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(again)
    assert f"nothing to do: early stopping ended this run at step {STOP_AT}" in again.stdout


def patience_spent(save_dir: Path) -> bool:
    """The newest checkpoint counts at least one validation without an improvement."""
    found = complete_checkpoints(save_dir / "checkpoints")
    try:
        saved = read_trainer_state(found[-1]).get("early_stopping", {}) if found else {}
    except (OSError, ValueError):  # pruned or renamed while read
        return False
    return saved.get("evaluations_since_best", 0) >= 1
