"""The generated ``config.yaml``: starting hyperparameters, tables and relations, its header.

`default_training_settings` is the one place to tune the defaults of imported graphs; the rest
routes each setting to the config section that owns it and proves the file loads.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from tml.core.config import ConfigError, load_config
from tml.core.training_config import TrainingConfig
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.tools.import_kg.errors import KgImportError
from tml.projects.twhin.tools.import_kg.reading import DELIMITERS
from tml.projects.twhin.tools.import_kg.vocabulary import Vocabulary


class _FlowMap(dict):
    """A mapping written on one line, as configs/local.yaml writes relations and optimizers."""


class _ConfigDumper(yaml.SafeDumper):
    """SafeDumper that writes `_FlowMap`s in flow style and repeats shared blocks in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_ConfigDumper.add_representer(
    _FlowMap,
    lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map", data.items(), flow_style=True
    ),
)


def default_training_settings(
    num_train_edges: int, num_entities: int, operator: str = "translation"
) -> dict[str, Any]:
    """Starting hyperparameters for an imported graph, the one place to tune them.

    Keys are config field names: training fields go to ``training``, data fields to both
    ``train_data`` and ``validation_data``, model fields (``translation_optimizer``, ``loss``…)
    to ``model``; ``table_optimizer`` is every table's optimizer block. Cadences count steps of
    a 1-rank run.
    """
    # About 16 steps per epoch on small graphs; 1000-edge batches on large ones.
    batch_size = min(1000, max(64, num_train_edges // 16))
    steps_per_epoch = max(1, math.ceil(num_train_edges / batch_size))
    # Small graphs need many passes; large ones learn most in a few.
    num_epochs = 60 if num_train_edges <= 100_000 else 20 if num_train_edges <= 1_000_000 else 5
    total_steps = steps_per_epoch * num_epochs
    # Picked on Kinships' validation split (see docs/evaluation.md): a short warm-up, then a
    # cosine decay to 1/50 of the peak keeps the fast early progress of a high rate without
    # the overfitting that follows it.
    peak = 0.2
    schedule = {
        "linear_ramp_to_cosine": {
            "learning_rate": peak,
            "final_learning_rate": peak / 50,
            "num_ramp_steps": steps_per_epoch,
            "final_num_steps": max(total_steps, steps_per_epoch + 1),
        }
    }
    optimizer = {"adagrad": {"lr": peak}, "learning_rate": schedule}
    return {
        "per_replica_batch_size": batch_size,
        # Uniform negatives scored by one matrix product; more than the entities would repeat.
        "global_negatives": max(1, min(100, num_entities)),
        "in_batch_negatives": 0,
        "loss": "softmax",
        "regularization": 0.02,
        # A reverse operator for head prediction lifted DistMult from 0.50 to 0.63 and ComplEx
        # from 0.81 to 0.82 on Kinships; it lowered TransE, so translation keeps one operator.
        "reciprocal_relations": operator != "translation",
        "table_optimizer": optimizer,
        "translation_optimizer": optimizer,
        "num_epochs": num_epochs,
        # Let the epochs end the run, not the trainer's default step cap.
        "num_train_steps": total_steps,
        "checkpoint_every_n": steps_per_epoch * 10,
        "checkpoint_max_to_keep": 3,
        "train_log_every_n": steps_per_epoch,
        "eval_log_every_n": steps_per_epoch * 10,
        "num_eval_steps": -1,
    }


def build_config(
    out: Path,
    vocabulary: Vocabulary,
    edges: dict[str, int],
    operator: str,
    dim: int,
) -> dict[str, Any]:
    """The training config as a dict: tables and relations from the vocabulary, the rest from
    `default_training_settings`, routed to the section that owns each field."""
    num_entities = sum(len(names) for names in vocabulary.tables.values())
    settings = default_training_settings(edges["train"], num_entities, operator)
    table_optimizer = _flow_blocks(settings.pop("table_optimizer"))
    training: dict[str, Any] = {"save_dir": f"runs/{out.name}"}
    data: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in settings.items():
        if key in TrainingConfig.model_fields:
            training[key] = value
        elif key in TwhinDataConfig.model_fields:
            data[key] = value
        elif key in TwhinModelConfig.model_fields and key not in ("embeddings", "relations"):
            model[key] = _flow_blocks(value) if isinstance(value, dict) else value
        else:
            raise KgImportError(
                f"default_training_settings returned {key!r}, which is not a field of the "
                "training, data or model config sections"
            )
    tables = [
        {
            "name": table,
            "num_embeddings": len(names),
            "embedding_dim": dim,
            "optimizer": table_optimizer,
        }
        for table, names in vocabulary.tables.items()
    ]
    table_names = list(vocabulary.tables)
    relations = [
        _FlowMap(
            name=info.name, lhs=table_names[info.lhs], rhs=table_names[info.rhs], operator=operator
        )
        for info in vocabulary.relation_info
    ]
    config: dict[str, Any] = {
        "training": training,
        "model": {"embeddings": {"tables": tables}, "relations": relations, **model},
        "train_data": {"data_root": str(out / "train"), **data},
    }
    if edges.get("valid"):
        config["validation_data"] = {"data_root": str(out / "valid"), **data}
    if edges.get("test"):
        config["test_data"] = {"data_root": str(out / "test"), **data}
    return config


def _flow_blocks(optimizer: dict[str, Any]) -> dict[str, Any]:
    """Optimizer block with each algorithm or schedule on one line (`adagrad: {lr: 0.1}`)."""
    return {
        key: _FlowMap(value) if isinstance(value, dict) else value
        for key, value in optimizer.items()
    }


def config_header(out: Path, files: dict[str, str], types: str | None, command: str) -> list[str]:
    dataset = Path(files["train"]).parent.name or "graph"
    lines = [
        f"Training config for the {dataset} knowledge graph, imported from:",
        *(f"  {split}: {path}" for split, path in files.items()),
    ]
    if types:
        lines.append(f"  types: {types}")
    lines += [
        f"Generated by: {command}",
        f"Ids: {out}/vocab/<table>.parquet (id, name); relations: {out}/relations.parquet.",
        "Batch size, negatives, optimizers and cadences come from",
        "tml.projects.twhin.tools.import_kg.default_training_settings; edit freely.",
    ]
    if "test" in files:
        lines.append(
            "test_data is not trained on; score it with "
            "`python -m tml.projects.twhin.evaluate --save_dir D --split test`."
        )
    return [f"# {line}" for line in lines]


def write_config(path: Path, config: dict[str, Any], header: list[str]) -> None:
    """Write the config and load it back, so an invalid config is never published."""
    text = "\n".join(header) + "\n" + yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False)
    path.write_text(text)
    try:
        load_config(TwhinConfig, path)
    except ConfigError as exc:
        raise KgImportError(f"the generated config does not validate: {exc}") from None


def command_line(
    files: dict[str, str],
    out: Path,
    operator: str,
    dim: int,
    types: str | None,
    delimiter: str,
    header: bool,
) -> str:
    words = ["python", "-m", "tml.projects.twhin.import_kg"]
    for split, path in files.items():
        words += [f"--{split}", path]
    words += ["--out", str(out), "--operator", operator, "--dim", str(dim)]
    if types:
        words += ["--types", types]
    flag = next((name for name, char in DELIMITERS.items() if char == delimiter), delimiter)
    words += ["--delimiter", flag]
    if header:
        words.append("--header")
    return shlex.join(words)
