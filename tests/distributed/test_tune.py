"""`tune` end to end on a small knowledge graph with real training runs (SQLite study): outputs,
continuing a study, pruning by SIGTERM at a validation evaluation, and bad-input trials."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import REPO, assert_ok, torchrun_env
from tests.tune_helpers import LR, load_study, make_graph, run_tune, runs_in, write_space
from tml.core.checkpoint import complete_checkpoints
from tml.core.config import load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.tuning.space import load_space
from tml.projects.twhin.tuning.storage import default_url, open_storage
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder
from tml.projects.twhin.tuning.worker import TuneWorker, WorkerSettings

# In `make test-tools` (CI runs it after `make test`), not `make test`: see docs/development.md.
pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_graph(tmp_path_factory.mktemp("tune") / "kg")


def validation_mrrs(save_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["mrr"] for r in records if r.get("split") == "validation"]


def test_tune_writes_the_best_config_a_trials_table_and_a_report_and_continues(
    base: Path, tmp_path: Path
) -> None:
    space = write_space(tmp_path / "space.yaml", LR)
    tune_dir = tmp_path / "tune"
    args = ("--search_space", str(space), "--jobs", "2", "--seed", "0", "--pruner", "none")
    first = run_tune(base, tune_dir, "--trials", "2", *args)
    assert_ok(first)
    study = load_study(default_url(tune_dir), "tune")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params == {"lr": 0.2} and study.trials[0].user_attrs["base"]
    for trial in study.trials:  # each trial is a normal run; the objective is its last
        run = tune_dir / "trials" / str(trial.number)  # validation MRR, never a test figure
        assert trial.value == validation_mrrs(run)[-1]
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # every 2 of 6 epochs
        assert complete_checkpoints(run / "checkpoints") and (run / "embeddings").is_dir()
        assert not (run / "eval").exists()
    # best.yaml: the base config with the best values, ready to train
    best = max(study.trials, key=lambda t: t.value)
    best_config = load_config(TwhinConfig, tune_dir / "best.yaml")
    assert best_config.model.embeddings.tables[0].optimizer.adagrad.lr == best.params["lr"]
    assert best_config.training.save_dir == str(tune_dir / "best")
    assert best_config.runtime.threads_per_rank is None  # the tuner's own setting stays out
    rows = list(csv_rows(tune_dir / "trials.csv"))
    assert [r["number"] for r in rows] == ["0", "1"] and rows[0]["lr"]
    assert json.loads((tune_dir / "trials.json").read_text())[1]["state"] == "complete"
    assert "validation_mrr" in first.stdout and f"best: trial {best.number}" in first.stdout
    page = tune_dir / "report" / "index.html"
    for plot in ("history.png", "intermediate.png", "slice.png"):
        assert plot in page.read_text() and (tune_dir / "report" / plot).stat().st_size > 1000
    page.unlink()  # the run report command knows a tune dir and redraws its report
    reported = subprocess.run(
        [sys.executable, "-m", "tml.projects.twhin.report", f"--save_dir={tune_dir}"],
        capture_output=True, text=True, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(reported)
    assert "Tune report: study tune" in page.read_text()
    # the same command continues the study: one more trial, the first two are not run again
    assert_ok(run_tune(base, tune_dir, "--trials", "3", *args))
    study = load_study(default_url(tune_dir), "tune")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(runs_in((tune_dir / "trials" / n / "train.log").read_text()) == 1 for n in "012")


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with open(path) as handle:
        yield from csv.DictReader(handle)


def worker_for(
    base: Path, tune_dir: Path, space: Path, pruner: optuna.pruners.BasePruner, trials: int
) -> tuple[TuneWorker, optuna.Study]:
    """A worker on a fresh SQLite study with the given pruner (the command's own parts)."""
    builder = TrialConfigBuilder(base, load_space(str(space)))
    tune_dir.mkdir()
    storage = open_storage(default_url(tune_dir), heartbeat_s=30)
    study = optuna.create_study(storage=storage, study_name="t", direction="maximize",
                                pruner=pruner)  # fmt: skip
    settings = WorkerSettings(save_dir=tune_dir, trials=trials, timeout_s=None, jobs=1,
                              nproc_per_trial=1, threads_per_trial=1)  # fmt: skip
    return TuneWorker(study, storage, builder, settings, threading.Event()), study


def test_a_pruned_trial_is_stopped_by_sigterm_and_keeps_a_resumable_checkpoint(
    base: Path, tmp_path: Path
) -> None:
    epochs = {"name": "epochs", "field": "training.num_epochs", "type": "categorical",
              "choices": [40]}  # fmt: skip
    space = write_space(tmp_path / "space.yaml", LR, epochs)
    tune_dir = tmp_path / "tune"
    # Any trial below an MRR of 0.999 is pruned at its first evaluation (epoch 2 of 40).
    worker, study = worker_for(base, tune_dir, space, optuna.pruners.ThresholdPruner(lower=0.999),
                               trials=1)  # fmt: skip
    worker.run()
    (trial,) = study.trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1]
    run = tune_dir / "trials" / "0"
    config = yaml.safe_load((run / "trial.yaml").read_text())
    total = config["training"]["num_train_steps"]
    (checkpoint,) = complete_checkpoints(run / "checkpoints")[-1:]
    stopped_at = int(checkpoint.name.removeprefix("step_"))
    assert config["training"]["eval_log_every_n"] <= stopped_at < total  # stopped early, saved
    assert (
        f"stopped at step {stopped_at} of {total} on request (SIGTERM)"
        in (run / "train.log").read_text()
    )
    assert trial.user_attrs["reason"] == "stopped by the pruner"


def test_a_trial_whose_config_is_bad_input_fails_and_the_study_goes_on(
    base: Path, tmp_path: Path
) -> None:
    good = yaml.safe_load(base.read_text())["train_data"]["data_root"]
    data = {"name": "data", "field": "train_data.data_root", "type": "categorical",
            "choices": [str(tmp_path / "missing"), good]}  # fmt: skip
    space = write_space(tmp_path / "space.yaml", LR, data)
    worker, study = worker_for(base, tmp_path / "tune", space, optuna.pruners.NopPruner(), 2)
    study.enqueue_trial({"data": str(tmp_path / "missing"), "lr": 0.2})
    study.enqueue_trial({"data": good, "lr": 0.2})
    worker.run()
    bad, fine = study.trials
    assert bad.state.name == "FAIL" and fine.state.name == "COMPLETE"
    assert bad.user_attrs["reason"] == (
        f"bad input (exit 2): data_root {tmp_path / 'missing'}: no such file or directory"
    )
