"""The search space and trial configs of `tune`: file validation, config paths, run lengths,
the trial count across retries and the meaning of a trial run's exit code (no training here)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from tests.conftest import REPO
from tests.helpers_data import config_dict, make_edges, write_edges
from tml.core.config import ConfigError, load_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.tune import main as tune_main
from tml.projects.twhin.tuning.space import SearchSpace, default_space, load_space
from tml.projects.twhin.tuning.storage import retry_later
from tml.projects.twhin.tuning.trial_config import TrialConfigBuilder
from tml.projects.twhin.tuning.trial_run import Outcome, TrialResult, TrialRun
from tml.projects.twhin.tuning.worker import counted_trials

LR = {"field": "model.embeddings.tables[user].optimizer.lr", "type": "float", "low": 0.01,
      "high": 1.0, "log": True}  # fmt: skip


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid base config over 6,000 edges: batch 100 (60 steps/epoch), 10 epochs, a cosine
    schedule on the user table, validation every 2 epochs."""
    root = tmp_path_factory.mktemp("tune_space")
    edges = np.tile(make_edges(100), (30, 1))  # two files of 3,000 edges
    write_edges(root / "edges" / "part-0.parquet", edges, row_group_size=1000)
    write_edges(root / "edges" / "part-1.parquet", edges, row_group_size=1000)
    config = config_dict(root / "edges", per_replica_batch_size=100)
    config["validation_data"] = dict(config["train_data"])
    config["training"] = {"num_epochs": 10, "num_train_steps": 100_000, "eval_log_every_n": 120,
                          "checkpoint_every_n": 300, "train_log_every_n": 60}  # fmt: skip
    config["model"]["embeddings"]["tables"][0]["optimizer"] = {
        "adagrad": {"lr": 0.2},
        "learning_rate": {"linear_ramp_to_cosine": {
            "learning_rate": 0.2, "final_learning_rate": 0.004, "num_ramp_steps": 60,
            "final_num_steps": 600}},
    }  # fmt: skip
    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(TwhinConfig, path).training.num_epochs == 10
    return path


def builder(base: Path, *parameters: dict) -> TrialConfigBuilder:
    space = SearchSpace.model_validate({"parameters": list(parameters)})
    return TrialConfigBuilder(base, space)


def write_space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("parameters:\n- {field: model.loss, type: categorical, choice: [softmax]}",
         "parameters[0].choice: unknown key"),
        ("parameters:\n- {field: model.margin, type: double, low: 0, high: 1}",
         "parameters[0].type: must be float, int or categorical"),
        ("parameters:\n- {field: model.margin, type: float, low: 2, high: 1}",
         "parameters[0].high: must be at least low (2.0), got 1.0"),
        ("parameters:\n- {field: model.margin, type: float, low: 0, high: 1, log: true}",
         "parameters[0].low: must be above 0 with log: true, got 0.0"),
        ("parameters:\n- {field: model.margin, type: float, low: 0.1, high: 1, when: {loss: [x]}}",
         "parameters[0].when: 'loss' is not an earlier parameter"),
        ("parameters:\n- {name: a, field: model.margin, type: float, low: 0.1, high: 1}\n"
         "- {name: a, field: model.loss, type: categorical, choices: [softmax]}",
         "parameters[1].name: 'a' is used twice"),
        ("parameters:\n- {field: model.loss, type: categorical, choices: [softmax]}\n"
         "- {field: model.margin, type: float, low: 0.1, high: 1, when: {model.loss: [rank]}}",
         "parameters[1].when.model.loss: ['rank'] not among its choices"),
    ],
)  # fmt: skip
def test_search_space_file_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_space(write_space(tmp_path, text))
    assert str(error.value).startswith(f"invalid config {tmp_path / 'space.yaml'}: ")
    assert message in str(error.value)


def test_a_field_the_config_lacks_is_refused_at_start_naming_the_parameter(
    base_config: Path,
) -> None:
    bad = {"name": "reg", "field": "model.regularisation", "type": "float", "low": 0.0, "high": 1}
    with pytest.raises(ConfigError, match=r"parameters\[0\] \(reg=0.0\): .*'reg': model: no field "
                       r"'regularisation'"):  # fmt: skip
        builder(base_config, bad).check_space()
    table = {**LR, "field": "model.embeddings.tables[users].optimizer.lr"}
    with pytest.raises(ConfigError, match=r"tables\[users\]: no item named 'users'"):
        builder(base_config, table).check_space()
    wrong_value = {"field": "model.loss", "type": "categorical", "choices": ["softmax", "hinge"]}
    with pytest.raises(ConfigError, match=r"parameters\[0\] \(model.loss='hinge'\).*model.loss"):
        builder(base_config, wrong_value).check_space()


def test_fields_the_tuner_derives_cannot_be_tuned(base_config: Path) -> None:
    steps = {"field": "training.num_train_steps", "type": "int", "low": 10, "high": 100}
    with pytest.raises(ConfigError, match="is set by the tuner from training.num_epochs"):
        builder(base_config, steps).check_space()


def test_a_learning_rate_moves_its_whole_schedule(base_config: Path) -> None:
    config = builder(base_config, LR).build({LR["field"]: 0.5}, "/tmp/x")
    optimizer = config["model"]["embeddings"]["tables"][0]["optimizer"]
    cosine = optimizer["learning_rate"]["linear_ramp_to_cosine"]
    assert optimizer["adagrad"]["lr"] == 0.5
    assert cosine["learning_rate"] == 0.5
    assert cosine["final_learning_rate"] == pytest.approx(0.01)  # keeps 1/50 of the peak
    # the other table and the relations keep theirs
    assert config["model"]["translation_optimizer"] == yaml.safe_load(base_config.read_text())[
        "model"]["translation_optimizer"]  # fmt: skip


def test_star_sets_every_table_and_dimension_is_only_tuned_when_asked(base_config: Path) -> None:
    dim = {"field": "model.embeddings.tables[*].embedding_dim", "type": "int", "low": 8,
           "high": 32, "step": 8}  # fmt: skip
    config = builder(base_config, dim).build({dim["field"]: 24}, "/tmp/x")
    assert {t["embedding_dim"] for t in config["model"]["embeddings"]["tables"]} == {24}
    base = load_config(TwhinConfig, base_config)
    fields = default_space(base, 10).fields().values()
    assert not any("embedding_dim" in field for field in fields)
    assert {"model.translation_optimizer.lr", "model.regularization", "model.loss",
            "model.margin", "train_data.global_negatives", "train_data.in_batch_negatives",
            "train_data.per_replica_batch_size", "training.num_epochs"} <= set(fields)  # fmt: skip


def test_batch_size_and_epochs_keep_schedules_and_cadences_in_epochs(base_config: Path) -> None:
    batch = {"name": "batch", "field": "train_data.per_replica_batch_size", "type": "int",
             "low": 50, "high": 400}  # fmt: skip
    epochs = {"name": "epochs", "field": "training.num_epochs", "type": "int", "low": 2,
              "high": 10}  # fmt: skip
    tuned = builder(base_config, batch, epochs)
    assert tuned.length.train_edges == 6000 and tuned.eval_every_epochs == 2
    config = tuned.build({"batch": 200, "epochs": 4}, "/tmp/x")  # 30 steps/epoch
    training = config["training"]
    assert training["num_train_steps"] == 120 and training["num_epochs"] == 4
    assert training["eval_log_every_n"] == 60  # still every 2 epochs
    assert training["train_log_every_n"] == 30 and training["checkpoint_every_n"] == 150
    cosine = config["model"]["embeddings"]["tables"][0]["optimizer"]["learning_rate"][
        "linear_ramp_to_cosine"]  # fmt: skip
    assert cosine["num_ramp_steps"] == 30  # a one-epoch warm-up stays one epoch
    assert cosine["final_num_steps"] == 120  # the decay ends where the run ends
    assert config["training"]["save_dir"] == "/tmp/x"
    untouched = builder(base_config, LR).build({LR["field"]: 0.2}, "/tmp/x")["training"]
    assert untouched["num_train_steps"] == 600 and untouched["eval_log_every_n"] == 120


def test_the_first_trial_is_the_base_configs_own_point(base_config: Path) -> None:
    epochs = {"name": "epochs", "field": "training.num_epochs", "type": "int", "low": 2,
              "high": 20, "step": 2}  # fmt: skip
    loss = {"name": "loss", "field": "model.loss", "type": "categorical",
            "choices": ["softmax", "ranking"]}  # fmt: skip
    margin = {"name": "margin", "field": "model.margin", "type": "float", "low": 0.5,
              "high": 2.0, "when": {"loss": ["ranking"]}}  # fmt: skip
    dims = {"name": "dim", "field": "model.embeddings.tables[*].embedding_dim", "type": "int",
            "low": 2, "high": 8}  # fmt: skip
    point = builder(base_config, LR, epochs, loss, margin, dims).base_point()
    # lr 0.2 and 10 epochs are in range; the base's loss (logistic) is not among the choices,
    # so nothing that depends on it is taken either; every table's dim is 4: one value.
    assert point == {LR["field"]: 0.2, "epochs": 10, "dim": 4}


def test_a_base_config_without_validation_mrr_is_refused(base_config: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(base_config.read_text())
    config.pop("validation_data")
    config["evaluation"] = {"ranking": False}
    path = tmp_path / "no_validation.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="validation_data: not set.*evaluation.ranking: false"):
        TrialConfigBuilder(path)


def test_failed_trials_queued_again_do_not_count_towards_the_target() -> None:
    study = optuna.create_study(direction="maximize")
    first = study.ask()
    first.suggest_float("x", 0, 1)
    study.tell(first, 0.5)
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    study.tell(dead, state=optuna.trial.TrialState.FAIL)  # a worker's trial that was stopped
    bad_input = study.ask()
    study.tell(bad_input, state=optuna.trial.TrialState.FAIL)  # not retried: counts
    assert counted_trials(study.trials) == 3
    retry_later(study, study.trials[1])
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "WAITING"]
    assert trials[3].params == trials[1].params
    assert counted_trials(trials) == 3  # the retry replaces the stopped trial


@pytest.mark.parametrize(
    "code, signalled, value, outcome, reason",
    [
        (0, None, 0.5, Outcome.COMPLETE, ""),
        (0, None, None, Outcome.FAILED, "the run wrote no validation MRR"),
        (0, Outcome.PRUNED, 0.1, Outcome.PRUNED, "stopped by the pruner"),
        (143, Outcome.PRUNED, 0.1, Outcome.PRUNED, "stopped by the pruner"),  # issue 13's code
        (143, Outcome.INTERRUPTED, 0.1, Outcome.INTERRUPTED, "can resume"),
        (143, None, 0.1, Outcome.FAILED, "a SIGTERM the tuner did not send"),
        (2, None, None, Outcome.FAILED, "bad input (exit 2): train_data.x: wrong"),
        (2, Outcome.PRUNED, None, Outcome.FAILED, "bad input (exit 2)"),
        (1, None, 0.3, Outcome.FAILED, "training failed (exit 1)"),
    ],
)  # fmt: skip
def test_a_runs_exit_code_decides_the_trials_state(
    tmp_path: Path, code: int, signalled: Outcome | None, value: float | None,
    outcome: Outcome, reason: str,
) -> None:  # fmt: skip
    run = TrialRun(["true"], tmp_path, 10, threading.Event())
    run.log_path.write_text("starting\nerror: train_data.x: wrong\n")
    result = run._finish(TrialResult(Outcome.COMPLETE, value=value), code, signalled)
    assert result.outcome is outcome
    assert reason in result.reason


def test_print_search_space_writes_a_file_tune_accepts(
    base_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--config_yaml_path", str(base_config), "--save_dir", str(tmp_path / "tune")]
    assert tune_main([*args, "--print_search_space", "--max_epochs", "8"]) == 0
    printed = write_space(tmp_path, capsys.readouterr().out)
    assert load_space(printed) == default_space(load_config(TwhinConfig, base_config), 8)
    assert not (tmp_path / "tune").exists()  # printing runs nothing


def test_docs_list_the_default_search_space(base_config: Path) -> None:
    text = (REPO / "docs" / "tuning.md").read_text()
    section = text.split("## The search space")[1].split("A search-space file")[0]
    documented = {}
    for row in re.findall(r"^\| `([^`]+)`.*?\| `([^`]+)`", section, re.M):
        documented[row[0]] = row[1]
    space = default_space(load_config(TwhinConfig, base_config), 10)
    expected = {}
    for name, field in space.fields().items():
        for table in ("user", "tweet", "ad"):
            name = name.replace(f"lr.{table}", "lr.<table>")
            field = field.replace(f"[{table}]", "[<table>]")
        expected[name] = field
    assert documented == expected


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--search_space", "{space}"], "error: invalid config {space}: parameters[0].high:"),
        (["--storage", "nosuchdb://x"], "error: --storage: Can't load plugin"),
        (["--storage", "sqlite:////nonexistent/dir/study.db"],
         "error: cannot use the study storage sqlite:////nonexistent/dir/study.db: unable to open"),
    ],
)  # fmt: skip
def test_tune_refuses_bad_input_with_exit_2(
    base_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    message: str,
) -> None:  # fmt: skip
    space = write_space(
        tmp_path, "parameters:\n- {field: model.margin, type: float, low: 2, high: 1}"
    )
    args = [word.format(space=space) for word in extra]
    code = tune_main(["--config_yaml_path", str(base_config), "--save_dir", str(tmp_path / "t"),
                      *args])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith(message.format(space=space))
