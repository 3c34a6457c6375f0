"""Warm start (`training.initial_checkpoint_dir`): another run's weights, onto tables that may
have grown since, as the next version of a graph has more users and tweets.

* **Tables** keep their old rows in their first rows (`import_kg --previous` and `synthetic
  --grow-from` keep every id), so each saved table goes into the leading rows of the new one
  through DCP's resharding (tml/core/leading_rows.py): any plan, any world size, and no process
  holds more than its own shards. The new rows start as `warm_start.new_rows` says
  (neighbor_init.py). A table the checkpoint lacks starts fresh; one that shrank, or whose
  dim changed, is an error naming it.
* **Optimizer state** of the tables carries for the old rows where the saved state has one
  entry per row in the same layout (row-wise Adagrad on row- or table-wise plans, Adagrad, Adam
  moments); the rest starts fresh, and the start log says which is which.
* **The anchor** (`warm_start.anchor` > 0): the frozen copy of the tables gets the same old
  rows, and `old_rows` of each table (models/anchor.py).
* **Relation parameters** carry by relation name, read from the previous run's `config.yaml`
  beside its `checkpoints/`; new relations (and relations whose operator changed shape) start
  fresh; their dense optimizer's state moves with them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from tml.core import safe_dcp
from tml.core.checkpoint import CheckpointError, describe_failure
from tml.core.errors import InputError
from tml.core.leading_rows import load_leading_rows
from tml.projects.twhin.artifacts.checkpoints import (
    MODEL_STATE,
    OPTIMIZER_STATE,
    load_dense,
    table_checkpoint_key,
)
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset
from tml.projects.twhin.models.model import anchor_weight_key, table_in_key, table_weight_key
from tml.projects.twhin.models.scorer import EdgeScorer
from tml.projects.twhin.parallel.sharded_model import ShardedTwhin
from tml.projects.twhin.training.neighbor_init import place_new_rows

log = logging.getLogger(__name__)


class WarmStartError(InputError):
    """The checkpoint cannot warm start this config; the message names the table or file."""


@dataclass
class GrownTables:
    """What the checkpoint holds for each of this config's tables."""

    old_rows: dict[str, int] = field(default_factory=dict)  # tables in the checkpoint
    fresh: list[str] = field(default_factory=list)  # tables it lacks

    def grown(self, new_rows: dict[str, int]) -> dict[str, tuple[int, int]]:
        return {t: (n, new_rows[t]) for t, n in self.old_rows.items() if new_rows[t] > n}


def saved_tensors(path: Path) -> dict[str, TensorStorageMetadata]:
    """The checkpoint's tensors by key, read without running code; WarmStartError if unreadable."""
    try:
        metadata = safe_dcp.read_metadata(path)
    except (OSError, CheckpointError, safe_dcp.UnsafeCheckpointError, EOFError) as exc:
        raise WarmStartError(f"training.initial_checkpoint_dir {path}: {exc}") from None
    return {
        key: value
        for key, value in metadata.state_dict_metadata.items()
        if isinstance(value, TensorStorageMetadata)
    }


def match_tables(config: TwhinConfig, saved: dict[str, Any], path: Path) -> GrownTables:
    """Old rows of each table in the checkpoint; a table that shrank or changed dim is an error."""
    found = GrownTables()
    for index, table in enumerate(config.model.embeddings.tables):
        entry = saved.get(table_checkpoint_key(table.name))
        if entry is None:
            found.fresh.append(table.name)
            continue
        rows, dim = entry.size
        where = f"training.initial_checkpoint_dir {path}: table {table.name!r}"
        if dim != table.embedding_dim:
            raise WarmStartError(
                f"{where} has embedding_dim {dim} but model.embeddings.tables[{index}] has "
                f"{table.embedding_dim}; a warm start keeps the dim"
            )
        if rows > table.num_embeddings:
            raise WarmStartError(
                f"{where} has {rows} rows but model.embeddings.tables[{index}] has "
                f"{table.num_embeddings}: a table may grow between versions, never shrink "
                "(ids stay put: import with --previous)"
            )
        found.old_rows[table.name] = rows
    return found


def optimizer_targets(
    optimizer_state: dict[str, Any], saved: dict[str, Any], tables: GrownTables
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Checkpoint key -> this run's optimizer state tensor, for the per-row state that carries;
    and table -> its state names that start fresh."""
    targets: dict[str, Any] = {}
    fresh: dict[str, list[str]] = {}
    for key, entry in optimizer_state["state"].items():
        table = table_in_key(key)
        if table is None or table not in tables.old_rows:
            continue
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue
            fqn = f"{OPTIMIZER_STATE}.state.{key}.{name}"
            old = saved.get(fqn)
            fits = old is not None and tuple(old.size) == (
                tables.old_rows[table],
                *tuple(value.size())[1:],
            )
            if fits:
                targets[fqn] = value
            else:
                fresh.setdefault(table, []).append(name)
    return targets, fresh


def carry_relations(
    sharded: ShardedTwhin, config: TwhinConfig, path: Path, saved: dict[str, Any]
) -> list[str]:
    """Copy the parameters of same-named relations from the previous run, and their optimizer
    state where it has the same shape; the relations that start fresh."""
    scorer: EdgeScorer = sharded.model.module.scorer
    names = [relation.name for relation in config.model.relations]
    if not any(scorer.relation_parameters(i) for i in range(len(names))):
        return []  # e.g. identity operators: nothing to carry
    previous = path.parent.parent / "config.yaml"
    try:
        old_config = TwhinConfig.model_validate(yaml.safe_load(previous.read_text()))
    except (OSError, ValueError) as exc:
        raise WarmStartError(
            f"training.initial_checkpoint_dir {path}: relations carry by name, read from the "
            f"previous run's {previous}: {describe_failure(exc)}"
        ) from None
    old_scorer = EdgeScorer(old_config.model)
    old_scorer.load_state_dict(
        {k.removeprefix("scorer."): v for k, v in load_dense(old_config, path).items()}
    )
    old_index = {relation.name: i for i, relation in enumerate(old_config.model.relations)}
    fresh = []
    with torch.no_grad():
        for index, name in enumerate(names):
            mine = scorer.relation_parameters(index)
            theirs = old_scorer.relation_parameters(old_index[name]) if name in old_index else {}
            if not mine:
                continue
            if set(theirs) != set(mine) or any(theirs[k].shape != v.shape for k, v in mine.items()):
                fresh.append(name)
                continue
            for key, value in mine.items():
                value.copy_(theirs[key])
    moved = {new: old_index[name] for new, name in enumerate(names) if name in old_index}
    carry_relation_optimizer(sharded, path, saved, {new: old for new, old in moved.items()
                                                    if names[new] not in fresh})  # fmt: skip
    return fresh


_RELATION_STATE = re.compile(r"^(.*\.(?:reverse_)?operators\.)(\d+)(\..+)$")


def carry_relation_optimizer(
    sharded: ShardedTwhin, path: Path, saved: dict[str, Any], old_index: dict[int, int]
) -> None:
    """The relations' dense optimizer state (Adagrad sums, steps), moved from each relation's
    old index to its new one. A fresh Adagrad takes its largest steps first: on relation
    parameters that every edge shares, that would shake a trained model."""
    state = sharded.optimizer.state_dict()
    targets = {}
    for key, entry in state["state"].items():
        match = _RELATION_STATE.match(key)
        if match is None or int(match.group(2)) not in old_index:
            continue
        old_key = f"{match.group(1)}{old_index[int(match.group(2))]}{match.group(3)}"
        for name, value in entry.items():
            old = saved.get(f"{OPTIMIZER_STATE}.state.{old_key}.{name}")
            if (
                isinstance(value, torch.Tensor)
                and old is not None
                and tuple(old.size) == tuple(value.size())
            ):
                targets[f"{OPTIMIZER_STATE}.state.{old_key}.{name}"] = value
    if targets:
        safe_dcp.load(targets, path)
        sharded.optimizer.load_state_dict(state)


def fill_anchors(
    sharded: ShardedTwhin, config: TwhinConfig, path: Path, tables: GrownTables
) -> None:
    """The anchor's frozen copy: the checkpoint's rows, and how many rows of each table are old."""
    model: Any = sharded.model.module
    state = sharded.model.state_dict()
    targets = {
        table_checkpoint_key(name): state[anchor_weight_key(name)] for name in tables.old_rows
    }
    load_leading_rows(targets, path)
    sharded.model.load_state_dict(
        {anchor_weight_key(name): state[anchor_weight_key(name)] for name in tables.old_rows},
        strict=False,
    )
    old_rows = [tables.old_rows.get(t.name, 0) for t in config.model.embeddings.tables]
    model.anchor_term.old_rows.copy_(torch.tensor(old_rows))


def warm_start(sharded: ShardedTwhin, config: TwhinConfig, path: Path, data: EdgeDataset) -> None:
    """Initialise this run from the checkpoint at `path` (see the module docstring)."""
    saved = saved_tensors(path)
    tables = match_tables(config, saved, path)
    model_state = sharded.model.state_dict()
    targets = {
        table_checkpoint_key(name): model_state[table_weight_key(name)] for name in tables.old_rows
    }
    optimizer_state = sharded.optimizer.state_dict()
    optim_targets, optim_fresh = optimizer_targets(optimizer_state, saved, tables)
    try:
        load_leading_rows({**targets, **optim_targets}, path)
    except (Exception, CheckpointException) as exc:  # DCP's error is a BaseException
        raise WarmStartError(
            f"training.initial_checkpoint_dir {path}: cannot load its weights "
            f"({describe_failure(exc)})"
        ) from None
    sharded.model.load_state_dict(
        {key.removeprefix(f"{MODEL_STATE}."): value for key, value in targets.items()},
        strict=False,
    )
    sharded.optimizer.load_state_dict(optimizer_state)
    if config.warm_start.anchor > 0:
        fill_anchors(sharded, config, path, tables)
    fresh_relations = carry_relations(sharded, config, path, saved)
    new_rows = {t.name: t.num_embeddings for t in config.model.embeddings.tables}
    grown = tables.grown(new_rows)
    placed = {}
    if grown and config.warm_start.new_rows == "neighbor_mean":
        carried = [r.name not in fresh_relations for r in config.model.relations]
        placed = place_new_rows(sharded, config, path, grown, data, carried)
    _log_warm_start(path, tables, grown, placed, optim_fresh, fresh_relations, config)


def _log_warm_start(
    path: Path,
    tables: GrownTables,
    grown: dict[str, tuple[int, int]],
    placed: dict[str, int],
    optim_fresh: dict[str, list[str]],
    fresh_relations: list[str],
    config: TwhinConfig,
) -> None:
    """Say, table by table, what came from the checkpoint and what starts fresh."""
    log.info("warm-started from %s", path)
    for name, old in tables.old_rows.items():
        if name in grown:
            new = grown[name][1] - old
            how = config.warm_start.new_rows
            extra = f", {placed[name]} of them placed" if name in placed else ""
            rows = f"{old:,} old rows carried, {new:,} new rows ({how}{extra})"
        else:
            rows = f"all {old:,} rows carried"
        state = optim_fresh.get(name)
        optimizer = (
            f"optimizer state {', '.join(state)} starts fresh (its layout does not carry)"
            if state
            else "optimizer state carried for the old rows, fresh for new rows"
        )
        log.info("warm start: table %s: %s; %s", name, rows, optimizer)
    if tables.fresh:
        log.info(
            "warm start: tables not in the checkpoint start fresh: %s", ", ".join(tables.fresh)
        )
    log.info(
        "warm start: relation parameters and their optimizer state carried by name%s",
        f" (fresh: {', '.join(fresh_relations)})" if fresh_relations else "",
    )
