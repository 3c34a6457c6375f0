"""Behavioural tests of config loading: the original TwHIN field set, validation, error messages
that name the field path, optimizer checks, and the CLI's one-line input errors."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import typing
import warnings
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
import yaml

from tml.core.config import ConfigError, load_config
from tml.core.optimizers import OptimizerConfig, dense_optimizer_factory, fused_table_optimizer
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.parallel.planner import check_compute_kernels

REPO_ROOT = Path(__file__).resolve().parents[2]

# The original TwHIN config, verbatim: it must load as is.
ORIGINAL_YAML = """\
runtime:
  enable_amp: false
training:
  save_dir: "/tmp/model"
  num_train_steps: 100000
  checkpoint_every_n: 100000
  train_log_every_n: 10
  num_eval_steps: 1000
  eval_log_every_n: 500
  eval_timeout_in_s: 10000
  num_epochs: 5
model:
  translation_optimizer:
    sgd:
      lr: 0.05
    learning_rate:
      constant: 0.05
  embeddings:
    tables:
      - name: user
        num_embeddings: 424_241
        embedding_dim: 4
        data_type: fp32
        optimizer:
          sgd:
            lr: 0.01
          learning_rate:
            constant: 0.01
      - name: tweet
        num_embeddings: 72_543
        embedding_dim: 4
        data_type: fp32
        optimizer:
          sgd:
            lr: 0.005
          learning_rate:
            constant: 0.005
  relations:
    - name: fav
      lhs: user
      rhs: tweet
      operator: translation
    - name: reply
      lhs: user
      rhs: tweet
      operator: translation
    - name: retweet
      lhs: user
      rhs: tweet
      operator: translation
    - name: magic_recs
      lhs: user
      rhs: tweet
      operator: translation
train_data:
  data_root: "gs://follows_tml_01/tweet_eng/2023-01-23/large/edges/*"
  per_replica_batch_size: 500
  global_negatives: 0
  in_batch_negatives: 10
  limit: 9990
validation_data:
  data_root: "gs://follows_tml_01/tweet_eng/2023-01-23/large/edges/*"
  per_replica_batch_size: 500
  global_negatives: 0
  in_batch_negatives: 10
  limit: 10
  offset: 9990
"""


def original() -> dict[str, Any]:
    return yaml.safe_load(ORIGINAL_YAML)


def write_config(directory: Path, raw: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def load_error(tmp_path: Path, raw: dict[str, Any] | str) -> str:
    """The ConfigError message for a config that must not load."""
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError) as error:
        load_config(TwhinConfig, path)
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def edited(change: typing.Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    raw = copy.deepcopy(original())
    change(raw)
    return raw


# -- the original field set ------------------------------------------------------------------


def test_original_twhin_config_loads_unchanged(tmp_path):
    config = load_config(TwhinConfig, write_config(tmp_path, ORIGINAL_YAML))

    assert config.runtime.enable_amp is False
    assert config.training.save_dir == "/tmp/model"
    assert config.training.num_train_steps == 100000
    assert config.training.num_epochs == 5
    assert config.training.eval_timeout_in_s == 10000
    tables = config.model.embeddings.tables
    assert [(t.name, t.num_embeddings, t.embedding_dim) for t in tables] == [
        ("user", 424241, 4),
        ("tweet", 72543, 4),
    ]
    assert tables[1].optimizer.algorithm_name == "sgd"
    assert tables[1].optimizer.schedule().constant == 0.005
    assert config.model.translation_optimizer.algorithm.lr == 0.05
    assert [r.name for r in config.model.relations] == ["fav", "reply", "retweet", "magic_recs"]
    assert all((r.lhs, r.rhs, r.operator) == ("user", "tweet", "translation")
               for r in config.model.relations)  # fmt: skip
    assert (config.train_data.limit, config.train_data.offset) == (9990, 0)
    assert config.validation_data is not None
    assert (config.validation_data.limit, config.validation_data.offset) == (10, 9990)
    assert config.train_data.in_batch_negatives == 10


def test_example_local_config_loads():
    config = load_config(TwhinConfig, REPO_ROOT / "configs" / "local.yaml")
    assert [t.name for t in config.model.embeddings.tables] == ["user", "tweet", "advertiser"]


def _model_classes(annotation: Any) -> typing.Iterator[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _model_classes(argument)


def test_every_config_field_reachable_from_twhin_config_has_a_description():
    seen: set[type[pydantic.BaseModel]] = set()
    pending: list[type[pydantic.BaseModel]] = [TwhinConfig]
    missing = []
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{model.__name__}.{name}")
            pending.extend(_model_classes(field.annotation))
    names = {model.__name__ for model in seen}
    # The walk really went through lists, unions and optionals.
    assert {
        "RuntimeConfig", "TrainingConfig", "EmbeddingTableConfig", "RelationConfig",
        "OptimizerConfig", "AdamConfig", "RowWiseAdagradConfig", "LearningRate",
        "LinearRampToCosine", "PiecewiseConstant", "TwhinDataConfig",
    } <= names  # fmt: skip
    assert missing == []


# -- errors name the field path --------------------------------------------------------------


def test_unknown_nested_key_is_rejected_with_its_path(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][0].update(embeding_dim=4))
    message = load_error(tmp_path, raw)
    assert "model.embeddings.tables[0].embeding_dim: unknown key" in message


def test_unknown_top_level_section_is_rejected_with_its_name(tmp_path):
    raw = edited(lambda c: c.update(trainng={"num_epochs": 1}))
    assert "trainng: unknown key" in load_error(tmp_path, raw)


def test_wrong_type_names_its_path_and_the_value(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][1].update(num_embeddings="many"))
    message = load_error(tmp_path, raw)
    assert "model.embeddings.tables[1].num_embeddings:" in message
    assert "'many'" in message


def test_wrong_type_in_a_list_item_names_its_index(tmp_path):
    raw = edited(lambda c: c["model"]["relations"].__setitem__(2, "retweet"))
    assert "model.relations[2]:" in load_error(tmp_path, raw)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("train_data", "per_replica_batch_size"),
        ("train_data", "data_root"),
        ("model", "translation_optimizer"),
    ],
)
def test_missing_required_field_names_its_path(tmp_path, section, field):
    raw = edited(lambda c: c[section].pop(field))
    message = load_error(tmp_path, raw)
    assert f"{section}.{field}: Field required" in message


def test_missing_required_section_is_named(tmp_path):
    raw = edited(lambda c: c.pop("train_data"))
    assert "train_data: Field required" in load_error(tmp_path, raw)


@pytest.mark.parametrize("side", ["lhs", "rhs"])
def test_relation_naming_a_missing_table_names_the_relation_side_and_the_table(tmp_path, side):
    raw = edited(lambda c: c["model"]["relations"][1].update({side: "advertiser"}))
    message = load_error(tmp_path, raw)
    assert f"model.relations[1].{side}: no table named 'advertiser'" in message
    assert "user, tweet" in message  # lists the tables that do exist
    assert "relations[0]" not in message


def test_translation_between_tables_of_different_dims_names_the_operator(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][1].update(embedding_dim=8))
    message = load_error(tmp_path, raw)
    for index in range(4):  # every relation joins user (4) to tweet (8)
        assert f"model.relations[{index}].operator:" in message
    assert "4 and 8" in message


def test_unknown_operator_is_rejected_with_the_choices(tmp_path):
    raw = edited(lambda c: c["model"]["relations"][3].update(operator="rotation"))
    message = load_error(tmp_path, raw)
    assert "model.relations[3].operator: unknown operator 'rotation'" in message
    assert "translation" in message


def test_duplicate_table_names_are_rejected(tmp_path):
    def duplicate(c):
        tables = c["model"]["embeddings"]["tables"]
        tables.append(copy.deepcopy(tables[0]))

    message = load_error(tmp_path, edited(duplicate))
    assert "model.embeddings.tables" in message
    assert "unique" in message
    assert "user" in message


def test_duplicate_relation_names_are_rejected(tmp_path):
    raw = edited(lambda c: c["model"]["relations"][2].update(name="fav"))
    assert "model.relations[2].name: relation 'fav' is defined twice" in load_error(tmp_path, raw)


@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_num_embeddings_is_rejected(tmp_path, value):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][0].update(num_embeddings=value))
    message = load_error(tmp_path, raw)
    assert "model.embeddings.tables[0].num_embeddings: Input should be greater than 0" in message


def test_empty_table_list_is_rejected(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"].update(tables=[]))
    assert "model.embeddings.tables:" in load_error(tmp_path, raw)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("runtime.enable_amp", True),
        ("runtime.wandb", {"entity": "twitter", "project": "twhin"}),
        ("training.gradient_accumulation", 4),
        ("model.embeddings.tables[0].pretrained", {"snapshot_path": "gs://x"}),
        ("model.embeddings.tables[1].vocab", "gs://vocab"),
        ("model.embeddings.tables_to_log", ["user"]),
    ],
)
def test_unsupported_original_field_is_rejected_when_set(tmp_path, path, value):
    def assign(c):
        node = c
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    message = load_error(tmp_path, edited(assign))
    assert f"{path}:" in message
    assert "not supported" in message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("runtime.enable_amp", False),
        ("runtime.wandb", None),
        ("training.gradient_accumulation", 1),
        ("training.gradient_accumulation", None),
        ("model.embeddings.tables_to_log", None),
    ],
)
def test_unsupported_original_field_is_accepted_when_unset(tmp_path, path, value):
    section, field = path.rsplit(".", 1)
    raw = original()
    node = raw
    for part in section.split("."):
        node = node[part]
    node[field] = value
    load_config(TwhinConfig, write_config(tmp_path, raw))


@pytest.mark.parametrize(
    "block", [{}, {"sgd": {"lr": 0.1}, "adagrad": {"lr": 0.1}}, {"learning_rate": {"constant": 1}}]
)
def test_optimizer_block_needs_exactly_one_algorithm(tmp_path, block):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][1].update(optimizer=block))
    message = load_error(tmp_path, raw)
    assert "model.embeddings.tables[1].optimizer: set exactly one optimizer" in message


def test_translation_optimizer_with_two_schedules_names_its_learning_rate(tmp_path):
    raw = edited(
        lambda c: c["model"]["translation_optimizer"]["learning_rate"].update(
            linear_ramp_to_constant={"learning_rate": 0.1, "num_ramp_steps": 10}
        )
    )
    message = load_error(tmp_path, raw)
    assert "model.translation_optimizer.learning_rate: set exactly one of" in message


def test_train_data_without_any_negatives_is_rejected(tmp_path):
    raw = edited(lambda c: c["train_data"].update(global_negatives=0, in_batch_negatives=0))
    message = load_error(tmp_path, raw)
    assert "train_data" in message
    assert "global_negatives or in_batch_negatives" in message


def test_validation_data_without_negatives_is_allowed(tmp_path):
    raw = edited(lambda c: c["validation_data"].update(in_batch_negatives=0))
    load_config(TwhinConfig, write_config(tmp_path, raw))


@pytest.mark.parametrize("url", ["gs://bucket/model", "s3://bucket/model", "file:///tmp/model"])
def test_save_dir_url_is_rejected(tmp_path, url):
    raw = edited(lambda c: c["training"].update(save_dir=url))
    message = load_error(tmp_path, raw)
    assert "training.save_dir: save_dir must be a local path" in message
    assert url in message


def test_save_dir_url_is_rejected_on_assignment_too():
    config = TwhinConfig.model_validate(original())
    with pytest.raises(pydantic.ValidationError, match="local path"):
        config.training.save_dir = "gs://bucket/model"
    assert config.training.save_dir == "/tmp/model"


# -- files -----------------------------------------------------------------------------------


def test_missing_config_file_is_a_config_error_naming_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as error:
        load_config(TwhinConfig, missing)
    assert str(missing) in str(error.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("runtime:\n  enable_amp: false\ntraining: save_dir: x\n", 3),
        ("model:\n  embeddings:\n\ttables: []\n", 3),
    ],
)
def test_invalid_yaml_is_a_config_error_naming_the_file_and_line(tmp_path, text, line):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match="is not valid YAML") as error:
        load_config(TwhinConfig, path)
    assert str(path) in str(error.value)
    assert f"at line {line}," in str(error.value)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_yaml_that_is_not_a_mapping_is_a_config_error(tmp_path, text):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match="must hold a mapping") as error:
        load_config(TwhinConfig, path)
    assert str(path) in str(error.value)


# -- fused table optimizers ------------------------------------------------------------------

WHERE = "model.embeddings.tables[1].optimizer"


def test_fused_table_optimizer_rejects_adam_on_cpu_naming_the_path():
    config = OptimizerConfig.model_validate({"adam": {"lr": 0.01}})
    with pytest.raises(ValueError, match="needs CUDA") as error:
        fused_table_optimizer(config, "cpu", WHERE)
    assert str(error.value).startswith(f"{WHERE}.adam:")
    fused = fused_table_optimizer(config, "cuda", WHERE)
    assert fused.optimizer_class is torch.optim.Adam
    assert fused.kwargs["lr"] == 0.01


def test_fused_table_optimizer_rejects_sgd_momentum_naming_the_path():
    config = OptimizerConfig.model_validate({"sgd": {"lr": 0.1, "momentum": 0.9}})
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="no momentum") as error:
            fused_table_optimizer(config, device, WHERE)
        assert str(error.value).startswith(f"{WHERE}.sgd.momentum:")


@pytest.mark.parametrize("algorithm", ["sgd", "adagrad", "rowwise_adagrad"])
def test_fused_table_optimizer_accepts_cpu_algorithms_with_their_lr(algorithm):
    from torchrec.optim import RowWiseAdagrad

    config = OptimizerConfig.model_validate({algorithm: {"lr": 0.3}})
    fused = fused_table_optimizer(config, "cpu", WHERE)
    expected = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}.get(
        algorithm, RowWiseAdagrad
    )
    assert fused.optimizer_class is expected
    assert fused.kwargs["lr"] == 0.3


def test_dense_optimizer_rejects_rowwise_adagrad_naming_the_path():
    config = OptimizerConfig.model_validate({"rowwise_adagrad": {"lr": 0.1}})
    with pytest.raises(ValueError, match="model.translation_optimizer.rowwise_adagrad:"):
        dense_optimizer_factory(config, "model.translation_optimizer")


def test_dense_sgd_keeps_its_momentum():
    config = OptimizerConfig.model_validate({"sgd": {"lr": 0.1, "momentum": 0.9}})
    optimizer = dense_optimizer_factory(config, "x")([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("eps", [0, -1e-8])
def test_adagrad_eps_must_be_positive(eps):
    with pytest.raises(pydantic.ValidationError, match="eps"):
        OptimizerConfig.model_validate({"adagrad": {"lr": 0.1, "eps": eps}})


# -- error messages stay precise --------------------------------------------------


def test_duplicate_table_error_does_not_invent_a_field_path(tmp_path):
    def duplicate(c):
        tables = c["model"]["embeddings"]["tables"]
        tables.append(copy.deepcopy(tables[0]))

    message = load_error(tmp_path, edited(duplicate))
    assert "model.embeddings.tables.repeated" not in message
    assert "repeated: user" in message


def test_unknown_key_error_names_the_path_once(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][0].update(embeding_dim=4))
    message = load_error(tmp_path, raw)
    assert message.count("model.embeddings.tables[0].embeding_dim") == 1


def test_no_negatives_error_is_not_attributed_to_root(tmp_path):
    raw = edited(lambda c: c["train_data"].update(global_negatives=0, in_batch_negatives=0))
    assert "<root>" not in load_error(tmp_path, raw)


def test_missing_section_error_does_not_dump_the_other_sections(tmp_path):
    raw = edited(lambda c: c.pop("model"))
    message = load_error(tmp_path, raw)
    assert "model: Field required" in message
    assert "follows_tml_01" not in message


# -- CLI -------------------------------------------------------------------------------------


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "tml/projects/twhin/run.py", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Start both CLI cases at once (each pays the torch import) and collect the results."""
    tmp = tmp_path_factory.mktemp("cli")
    bad_relation = write_config(
        tmp, edited(lambda c: c["model"]["relations"][1].update(lhs="usr")), "bad_relation.yaml"
    )
    bad_key = write_config(
        tmp,
        edited(lambda c: c["model"]["embeddings"]["tables"][0].update(embeding_dim=4)),
        "bad_key.yaml",
    )
    fresh_dir = tmp / "fresh" / "run"  # does not exist yet
    empty_dir = tmp / "empty"
    empty_dir.mkdir()
    cases = {
        # --config_yaml_path=FILE with --save_dir DIR
        "equals": ([f"--config_yaml_path={bad_relation}", "--save_dir", str(fresh_dir)], fresh_dir),
        # --config_yaml_path FILE with --save_dir=DIR
        "space": (["--config_yaml_path", str(bad_key), f"--save_dir={empty_dir}"], empty_dir),
    }
    processes = {name: (_cli(args), save_dir) for name, (args, save_dir) in cases.items()}
    results = {}
    for name, (process, save_dir) in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
            save_dir,
        )
    return results


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("equals", "model.relations[1].lhs"),
        ("space", "model.embeddings.tables[0].embeding_dim"),
    ],
)
def test_cli_bad_config_exits_2_with_one_error_line_and_creates_nothing(cli_runs, case, field):
    result, save_dir = cli_runs[case]
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert field in lines[0]
    assert "Traceback" not in result.stderr
    if case == "equals":
        assert not save_dir.exists()
        assert not save_dir.parent.exists()
    else:
        assert list(save_dir.iterdir()) == []


@pytest.fixture
def restore_logging():
    """`run.main` configures process-wide logging and warnings; undo that after the test."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    with warnings.catch_warnings():
        yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_cli_save_dir_url_is_one_error_line_naming_save_dir(
    tmp_path, capsys, monkeypatch, restore_logging
):
    # In-process (the subprocess cases above cover process-level behaviour); same `main`.
    from tml.projects.twhin import run

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    good = write_config(tmp_path, original())
    code = run.main([f"--config_yaml_path={good}", "--save_dir", "gs://bucket/run"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert _error_lines(stderr) == stderr.strip().splitlines()
    (line,) = _error_lines(stderr)
    assert "save_dir" in line
    assert "gs://bucket/run" in line


# -- UVM compute kernels (tables larger than GPU memory) --------------------------------------


def test_cache_load_factor_without_the_caching_kernel_names_the_field(tmp_path):
    raw = edited(lambda c: c["model"]["embeddings"]["tables"][0].update(cache_load_factor=0.3))
    message = load_error(tmp_path, raw)
    assert "model.embeddings.tables[0]" in message and "cache_load_factor" in message
    assert "fused_uvm_caching" in message


def test_uvm_kernels_are_accepted_by_the_config_and_refused_on_cpu():
    raw = edited(
        lambda c: c["model"]["embeddings"]["tables"][1].update(
            compute_kernel="fused_uvm_caching", cache_load_factor=0.3
        )
    )
    config = TwhinConfig.model_validate(raw)
    check_compute_kernels(config.model, "cuda")  # a GPU run takes it to the planner
    with pytest.raises(ValueError) as error:
        check_compute_kernels(config.model, "cpu")
    assert str(error.value).startswith(
        "model.embeddings.tables[1].compute_kernel: fused_uvm_caching needs a CUDA device"
    )
