"""A run's checkpoints as files: their state layout, and reading them offline (no process group).

The trainer saves `{MODEL_STATE: model.state_dict(), OPTIMIZER_STATE: optimizer.state_dict()}`
with torch.distributed.checkpoint, so a table's weight is `model.tables.embedding_bags.<t>.weight`.
DCP reshards on load: a checkpoint written by any number of ranks reads into full tables here.
Every read goes through tml.core.safe_dcp, so reading a checkpoint never runs code from it.

Tables larger than memory: a table is read in row windows of at most `ROWS_PER_READ` rows, cut at
the row boundaries of the saved shards. DCP's resharding reads exactly the saved pieces that
overlap a window (`_RowWindowPlanner` describes the window as a chunk at its row offset). Its file
reader deserialises a saved shard whole before copying the rows out, so memory peaks at one saved
shard plus one window: a row-wise table of R shards never needs more than ~1/R of it, and a
table-wise one (a single shard) is held once, never twice, at the price of re-reading it for each
window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from tml.core import safe_dcp
from tml.core.checkpoint import (
    BEST_POINTER,
    CheckpointError,
    best_checkpoint,
    complete_checkpoints,
    is_complete,
)
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.config import EmbeddingTableConfig, TwhinModelConfig
from tml.projects.twhin.models.model import table_weight_key
from tml.projects.twhin.models.scorer import EdgeScorer

MODEL_STATE = "model"
OPTIMIZER_STATE = "optim"
BEST = "best"
"""`--checkpoint best`: the checkpoint `checkpoints/best.json` names (training.early_stopping)."""
ROWS_PER_READ = 1 << 20
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def table_checkpoint_key(table: str) -> str:
    """The checkpoint key of a table's weight."""
    return f"{MODEL_STATE}.{table_weight_key(table)}"


def _best(run: RunDir) -> Path:
    try:
        path = best_checkpoint(run.checkpoints)
    except CheckpointError as exc:
        raise FileNotFoundError(f"no best checkpoint: {exc}") from None
    if path is None:
        raise FileNotFoundError(
            f"no best checkpoint in {run.checkpoints} (no {BEST_POINTER}: the run had no "
            "training.early_stopping, or no validation yet); name a step_N instead"
        )
    if not is_complete(path):
        raise FileNotFoundError(
            f"the best checkpoint {path} ({run.checkpoints / BEST_POINTER}) does not exist or "
            "is incomplete"
        )
    return path


def resolve_checkpoint(run: RunDir, checkpoint: str | None) -> Path:
    """The named checkpoint (`step_N`, `best` or a path), or the newest complete one."""
    if checkpoint == BEST:
        return _best(run)
    if checkpoint:
        path = run.checkpoint(checkpoint)
        if not is_complete(path):
            raise FileNotFoundError(f"checkpoint {path} does not exist or is incomplete")
        return path
    found = complete_checkpoints(run.checkpoints)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {run.checkpoints}")
    return found[-1]


def per_relation_view(
    model: TwhinModelConfig, state: dict[str, Any], saved: Collection[str]
) -> tuple[dict[str, Any], Callable[[], None]]:
    """What to load from a checkpoint with `saved` keys into `state` ({MODEL_STATE, and
    OPTIMIZER_STATE if present}), and what to run after loading.

    Checkpoints written before relations were stacked hold one tensor per relation
    (`scorer.operators.<r>.<name>`, its optimizer state likewise). For those, each stacked
    parameter and each of its optimizer state tensors is replaced by views of its rows under the
    old names, so DCP loads them in place; per-relation step counters load into scalars of their
    own and `finish()` sets each stacked counter to their maximum. Other checkpoints: `state`.
    """
    old_prefix = f"{MODEL_STATE}.scorer.operators."
    names = {
        f"scorer.{stacked}": [f"scorer.{old}" for old in olds]
        for stacked, olds in EdgeScorer(model).per_relation_names().items()
    }
    if not names or not any(key.startswith(old_prefix) for key in saved):
        return state, lambda: None
    counters: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def rows(value: dict[str, Any], stacked: str, olds: list[str], prefix: str = "") -> None:
        """Replace `value[prefix + stacked]` by one entry per relation, `value[prefix + old]`."""
        entry = value.pop(prefix + stacked)
        if isinstance(entry, torch.Tensor):  # a parameter
            value.update({prefix + old: row for old, row in zip(olds, entry, strict=True)})
            return
        per_relation: list[dict[str, Any]] = [{} for _ in olds]  # its optimizer state
        for name, item in entry.items():
            if isinstance(item, torch.Tensor) and item.dim() == 0:  # a step counter
                singles = [item.clone() for _ in olds]
                counters.append((item, singles))
            else:
                singles = list(item) if isinstance(item, torch.Tensor) else [item] * len(olds)
            for target, single in zip(per_relation, singles, strict=True):
                target[name] = single
        value.update({prefix + old: part for old, part in zip(olds, per_relation, strict=True)})

    view = {MODEL_STATE: dict(state[MODEL_STATE])}
    for stacked, olds in names.items():
        rows(view[MODEL_STATE], stacked, olds)
    if OPTIMIZER_STATE in state:
        optim_state = dict(state[OPTIMIZER_STATE]["state"])
        for key in list(optim_state):  # "<optimizer>.scorer.operator_groups.0.real" -> rows
            match = next((name for name in names if key.endswith(f".{name}")), None)
            if match is not None:
                rows(optim_state, match, names[match], key.removesuffix(match))
        view[OPTIMIZER_STATE] = {**state[OPTIMIZER_STATE], "state": optim_state}

    def finish() -> None:
        for counter, per_relation in counters:
            counter.copy_(torch.stack(per_relation).max())

    return view, finish


def load_dense(config: TwhinConfig, checkpoint: Path) -> dict[str, torch.Tensor]:
    """The relation operators' parameters, `scorer.`-prefixed as in the model's state."""
    dense = {f"scorer.{k}": v for k, v in EdgeScorer(config.model).state_dict().items()}
    saved = safe_dcp.read_metadata(checkpoint).state_dict_metadata
    request, finish = per_relation_view(config.model, {MODEL_STATE: dense}, saved)
    safe_dcp.load(request, checkpoint, no_dist=True)
    finish()
    return dense


def load_tables(
    config: TwhinConfig, checkpoint: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Full tables (all in memory, for evaluation) and the dense parameters."""
    tables = {
        table.name: torch.empty(
            table.num_embeddings, table.embedding_dim, dtype=_TORCH_DTYPES[table.data_type.value]
        )
        for table in config.model.embeddings.tables
    }
    safe_dcp.load(
        {table_checkpoint_key(name): t for name, t in tables.items()}, checkpoint, no_dist=True
    )
    return tables, load_dense(config, checkpoint)


class _RowWindowPlanner(DefaultLoadPlanner):
    """Loads rows [start, start + len(window)) of one saved 2-D tensor into `window`.

    The default planner insists that the destination has the saved tensor's full size; this one
    presents the window as a chunk at row `start` and lets DCP's resharding find the overlaps.
    """

    def __init__(self, key: str, start: int, window: torch.Tensor) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._key, self._start, self._window = key, start, window

    def create_local_plan(self) -> LoadPlan:
        chunk = ChunkStorageMetadata(
            offsets=torch.Size([self._start, 0]), sizes=self._window.size()
        )
        assert self.metadata is not None  # set by DCP before it asks for the plan
        saved = self.metadata.state_dict_metadata[self._key]
        assert isinstance(saved, TensorStorageMetadata), f"{self._key} is not a tensor"
        return LoadPlan(create_read_items_for_chunk_list(self._key, saved, [chunk]))

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self._window


def row_windows(metadata: Metadata, key: str, num_rows: int, max_rows: int) -> list[range]:
    """Row ranges of at most `max_rows` that never straddle a saved shard's row boundary."""
    saved = metadata.state_dict_metadata[key]
    assert isinstance(saved, TensorStorageMetadata), f"{key} is not a tensor"
    chunks = saved.chunks
    bounds = sorted(
        {0, num_rows}
        | {chunk.offsets[0] for chunk in chunks}
        | {chunk.offsets[0] + chunk.sizes[0] for chunk in chunks}
    )
    return [
        range(start, min(start + max_rows, stop))
        for low, stop in itertools.pairwise(bounds)
        for start in range(low, stop, max_rows)
    ]


def iter_table_rows(
    checkpoint: Path,
    table: EmbeddingTableConfig,
    max_rows: int = ROWS_PER_READ,
    part: int = 0,
    parts: int = 1,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows) of a table, window by window, in row order.

    With `parts` > 1, only part `part` of the windows: those starting in its 1/parts of the
    rows, so `parts` processes reading parts 0..parts-1 read every row exactly once.
    """
    key = table_checkpoint_key(table.name)
    metadata = safe_dcp.read_metadata(checkpoint)
    if key not in metadata.state_dict_metadata:
        raise FileNotFoundError(f"checkpoint {checkpoint} has no table {table.name!r}")
    dtype = _TORCH_DTYPES[table.data_type.value]
    first, stop = (table.num_embeddings * p // parts for p in (part, part + 1))
    for rows in row_windows(metadata, key, table.num_embeddings, max_rows):
        if not first <= rows.start < stop:
            continue
        window = torch.empty(len(rows), table.embedding_dim, dtype=dtype)
        safe_dcp.load({key: window}, checkpoint, no_dist=True,
                      planner=_RowWindowPlanner(key, rows.start, window))  # fmt: skip
        yield rows.start, window
