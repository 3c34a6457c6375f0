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
    moved = {new: old for new, old in moved.items() if names[new] not in fresh}
    carried = carry_relation_optimizer(sharded, old_scorer, path, saved, moved)
    log.info(
        "warm start: the optimizer state of %d of %d carried relations came with them", carried,
        len(moved),
    )  # fmt: skip
    return fresh


_LEGACY_NAME = re.compile(r"^(?:reverse_)?operators\.\d+\.[^.]+$")


def relation_state_rows(
    names: dict[str, list[str]], optimizer_state: dict[str, Any]
) -> dict[str, dict[str, torch.Tensor]]:
    """Per relation, its rows of the dense optimizer's state, keyed by the name the relation's
    parameter had before relations were stacked (`operators.<r>.<param>`, see
    EdgeScorer.per_relation_names): views, so writing one writes the stacked state. Entries
    already in that per-relation form (old checkpoints) are taken whole. Step counters (one per
    stacked parameter) are left out: they stay this run's."""
    rows: dict[str, dict[str, torch.Tensor]] = {}
    for key, entry in optimizer_state.items():
        tensors = {k: v for k, v in entry.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        scorer_name = key.rpartition("scorer.")[2]
        if scorer_name in names:
            for index, legacy in enumerate(names[scorer_name]):
                rows[legacy] = {k: v[index] for k, v in tensors.items()}
        elif _LEGACY_NAME.match(scorer_name):
            rows[scorer_name] = tensors
    return rows


def saved_relation_state(saved: dict[str, Any], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The previous run's dense optimizer state of its relation parameters (small: one row per
    relation), read whole, as {optimizer key: {state name: tensor}}."""
    prefix = f"{OPTIMIZER_STATE}.state."
    targets: dict[str, torch.Tensor] = {}
    for fqn, meta in saved.items():
        if fqn.startswith(prefix) and ".scorer." in fqn and isinstance(meta, TensorStorageMetadata):
            targets[fqn] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    if targets:
        safe_dcp.load(targets, path)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for fqn, value in targets.items():
        key, _, name = fqn.removeprefix(prefix).rpartition(".")
        state.setdefault(key, {})[name] = value
    return state


def carry_relation_optimizer(
    sharded: ShardedTwhin,
    old_scorer: EdgeScorer,
    path: Path,
    saved: dict[str, Any],
    old_index: dict[int, int],
) -> int:
    """The relations' dense optimizer state (Adagrad sums), moved row by row from each
    relation's old place to its new one; how many relations it carried. A fresh Adagrad takes
    its largest steps first: on relation parameters that every edge shares, that would shake a
    trained model."""
    scorer: EdgeScorer = sharded.model.module.scorer
    state = sharded.optimizer.state_dict()
    mine = relation_state_rows(scorer.per_relation_names(), state["state"])
    theirs = relation_state_rows(old_scorer.per_relation_names(), saved_relation_state(saved, path))
    carried = set()
    with torch.no_grad():
        for legacy, rows in mine.items():
            kind, relation, param = legacy.split(".")
            if int(relation) not in old_index:
                continue
            old = theirs.get(f"{kind}.{old_index[int(relation)]}.{param}", {})
            for name, row in rows.items():
                if name in old and old[name].shape == row.shape:
                    row.copy_(old[name])
                    carried.add(int(relation))
    if carried:
        sharded.optimizer.load_state_dict(state)
    return len(carried)


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
        "warm start: relation parameters carried by name%s",
        f" (fresh: {', '.join(fresh_relations)})" if fresh_relations else "",
    )
