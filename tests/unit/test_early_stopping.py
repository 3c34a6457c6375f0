"""Early stopping's parts: the config, the plateau count, the best pointer and its pruning, the
`best` name of evaluate/export, and the tuner's objective (the end-to-end runs are in
tests/distributed/test_early_stopping_runs.py)."""

from __future__ import annotations

import copy
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from tests.conftest import REPO
from tml.core.checkpoint import (
    BEST_POINTER,
    CheckpointError,
    CheckpointManager,
    best_checkpoint,
    complete_checkpoints,
    read_best,
)
from tml.core.config import ConfigError, load_config
from tml.core.early_stopping import Plateau, PlateauState
from tml.core.training_config import EarlyStoppingConfig
from tml.projects.twhin.artifacts.checkpoints import resolve_checkpoint
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import RANKING_METRICS, VALIDATION_METRICS, TwhinConfig
from tml.projects.twhin.eval.ranking import RankingAccumulator
from tml.projects.twhin.tuning.trial_run import Outcome, TrialResult, TrialRun

LOCAL = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())


def load_with(tmp_path: Path, early_stopping: dict | None, **sections: object) -> TwhinConfig:
    """configs/local.yaml with `training.early_stopping` and `sections` (`training` merges)."""
    config = copy.deepcopy(LOCAL)
    config["training"].update(sections.pop("training", {}), early_stopping=early_stopping)
    config.update(sections)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(TwhinConfig, path)


def test_early_stopping_is_off_by_default_and_defaults_to_mrr(tmp_path: Path) -> None:
    assert load_with(tmp_path, None).training.early_stopping is None
    stopping = load_with(tmp_path, {}).training.early_stopping
    assert stopping == EarlyStoppingConfig(metric="mrr", patience=3, min_delta=0.0)
    assert load_with(tmp_path, {"metric": "loss"}).training.early_stopping.metric == "loss"


@pytest.mark.parametrize(
    "early_stopping, sections, message",
    [
        ({"metric": "mmr"}, {},
         "training.early_stopping.metric: unknown validation metric 'mmr'; the validation during "
         "training computes loss, negatives_auc, mrr, hits@1, hits@3, hits@10, mean_rank, auc"),
        ({"patience": 0}, {}, "training.early_stopping.patience: Input should be greater than 0"),
        ({"min_delta": -0.1}, {}, "training.early_stopping.min_delta: Input should be greater"),
        ({"mode": "max"}, {}, "training.early_stopping.mode: unknown key"),
        ({}, {"validation_data": None},
         "training.early_stopping: needs validation during training (validation_data"),
        ({}, {"training": {"num_eval_steps": 0}},
         "training.early_stopping: needs validation during training (validation_data, and "
         "training.num_eval_steps other than 0)"),
        ({"metric": "hits@10"}, {"evaluation": {"ranking": False}},
         "training.early_stopping.metric: hits@10 is a ranking metric, which evaluation.ranking: "
         "false turns off"),
    ],
)  # fmt: skip
def test_bad_early_stopping_settings_are_refused_at_load_naming_the_field(
    tmp_path: Path, early_stopping: dict, sections: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path, early_stopping, **sections)
    assert f"invalid config {tmp_path / 'x.yaml'}: " in str(caught.value)
    assert message in str(caught.value)


def test_the_metrics_early_stopping_accepts_are_the_ones_ranking_computes() -> None:
    assert set(RankingAccumulator().metrics()) == set(RANKING_METRICS)
    assert VALIDATION_METRICS["mrr"] and not VALIDATION_METRICS["mean_rank"]
    assert not VALIDATION_METRICS["loss"]


def plateau(metric: str = "mrr", patience: int = 2, min_delta: float = 0.0) -> Plateau:
    config = EarlyStoppingConfig(metric=metric, patience=patience, min_delta=min_delta)
    return Plateau(config, higher_is_better=VALIDATION_METRICS[metric])


def test_patience_counts_evaluations_in_a_row_without_a_better_value() -> None:
    watch = plateau(patience=2, min_delta=0.01)
    assert watch.observe(10, {"mrr": 0.30})
    assert not watch.observe(20, {"mrr": 0.305})  # better, but not by more than min_delta
    assert watch.observe(30, {"mrr": 0.32})  # a new best resets the count
    assert not watch.observe(40, {"mrr": 0.1}) and not watch.exhausted
    assert not watch.observe(50, {"mrr": math.nan})  # a diverged model is never the best
    assert watch.exhausted
    assert (watch.state.best_step, watch.state.best_value) == (30, 0.32)


def test_lower_is_better_for_loss_and_mean_rank() -> None:
    for metric in ("loss", "mean_rank"):
        watch = plateau(metric, patience=1)
        assert watch.observe(1, {metric: 5.0}) and watch.observe(2, {metric: 4.0})
        assert not watch.observe(3, {metric: 4.5}) and watch.exhausted


def test_the_plateau_state_round_trips_through_json() -> None:
    watch = plateau()
    watch.observe(10, {"mrr": 0.5, "hits@1": 0.4})
    watch.observe(20, {"mrr": 0.4, "hits@1": 0.3})
    saved = json.loads(json.dumps(watch.state.to_dict()))
    assert PlateauState.from_dict(saved) == watch.state
    assert watch.state.best_metrics == {"mrr": 0.5, "hits@1": 0.4}


@pytest.fixture
def one_rank_group(tmp_path: Path) -> Iterator[None]:
    """A real one-process gloo group: CheckpointManager.save synchronises with barriers."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def save_steps(manager: CheckpointManager, steps: list[int]) -> None:
    for step in steps:
        state = {"model": {"weight": torch.full((2, 2), float(step))}}
        manager.save(step, state, {"step": step})


def step_names(directory: Path) -> list[str]:
    return [path.name for path in complete_checkpoints(directory)]


def test_pruning_keeps_the_best_checkpoint_whatever_checkpoint_max_to_keep_says(
    tmp_path: Path, one_rank_group: None
) -> None:
    directory = tmp_path / "checkpoints"
    manager = CheckpointManager(directory, keep=2, rank=0)
    save_steps(manager, [10, 20])
    manager.mark_best(10, {"metric": "mrr", "value": 0.5})
    save_steps(manager, [30, 40, 50])
    assert step_names(directory) == ["step_10", "step_40", "step_50"]
    manager.mark_best(50, {"metric": "mrr", "value": 0.6})  # the old best goes at once
    assert step_names(directory) == ["step_40", "step_50"]
    assert best_checkpoint(directory) == directory / "step_50"
    save_steps(manager, [60, 70])
    assert step_names(directory) == ["step_50", "step_60", "step_70"]


def test_an_unreadable_best_pointer_stops_pruning_rather_than_guess(
    tmp_path: Path, one_rank_group: None
) -> None:
    directory = tmp_path / "checkpoints"
    manager = CheckpointManager(directory, keep=1, rank=0)
    save_steps(manager, [10])
    (directory / BEST_POINTER).write_text('{"checkpoint": "step_1')  # torn by hand
    save_steps(manager, [20, 30])
    assert step_names(directory) == ["step_10", "step_20", "step_30"]


def test_the_best_pointer_is_replaced_atomically(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    manager = CheckpointManager(directory, keep=None, rank=0)
    manager.mark_best(10, {"metric": "mrr", "value": 0.5})
    first = (directory / BEST_POINTER).read_text()
    with pytest.raises(TypeError):  # fails while writing: the old pointer stays whole
        manager.mark_best(20, {"metric": "mrr", "value": object()})
    assert (directory / BEST_POINTER).read_text() == first
    assert [p.name for p in directory.iterdir()] == [BEST_POINTER]  # nor a staging file left
    manager.mark_best(20, {"metric": "mrr", "value": 0.7})
    assert read_best(directory) == {"checkpoint": "step_20", "step": 20, "metric": "mrr",
                                    "value": 0.7}  # fmt: skip
    CheckpointManager(directory, keep=None, rank=1).mark_best(30, {})  # only rank 0 writes
    assert read_best(directory)["step"] == 20
    manager.forget_best()
    assert read_best(directory) is None


def test_checkpoint_best_names_the_pointed_checkpoint_or_says_why_not(
    tmp_path: Path, one_rank_group: None
) -> None:
    run = RunDir(tmp_path)
    manager = CheckpointManager(run.checkpoints, keep=None, rank=0)
    save_steps(manager, [10, 20])
    with pytest.raises(FileNotFoundError, match=r"no best checkpoint in .*checkpoints \(no best"):
        resolve_checkpoint(run, "best")
    manager.mark_best(10, {})
    assert resolve_checkpoint(run, "best") == run.checkpoints / "step_10"
    assert resolve_checkpoint(run, None) == run.checkpoints / "step_20"  # the newest, as before
    assert resolve_checkpoint(run, "step_20") == run.checkpoints / "step_20"
    (run.checkpoints / BEST_POINTER).write_text('{"checkpoint": "../../etc"}')
    with pytest.raises(FileNotFoundError, match="does not name a step_<N> checkpoint"):
        resolve_checkpoint(run, "best")
    with pytest.raises(CheckpointError):
        read_best(run.checkpoints)


def test_a_trial_with_early_stopping_is_scored_by_its_best_checkpoint(tmp_path: Path) -> None:
    run = TrialRun(["true"], tmp_path, 10, threading.Event())
    last = run._finish(TrialResult(Outcome.COMPLETE, value=0.4), 0, None)
    assert last.value == 0.4  # no best checkpoint: the last validation
    checkpoints = RunDir(tmp_path).checkpoints
    checkpoints.mkdir()
    CheckpointManager(checkpoints, keep=None, rank=0).mark_best(
        20, {"metric": "loss", "value": 1.2, "metrics": {"loss": 1.2, "mrr": 0.55}}
    )
    best = run._finish(TrialResult(Outcome.COMPLETE, value=0.4), 0, None)
    assert (best.outcome, best.value) == (Outcome.COMPLETE, 0.55)
