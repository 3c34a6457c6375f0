"""Everything checked before the process group starts: the save dir, a warm start, optimizers and
kernels for this device, and the data (planned from parquet metadata).

Every rank meets these inputs alike, so a bad one fails in a second with one `error:` line
(exit 2, not retried) instead of hanging a job in its first collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tml.core.checkpoint import step_directories
from tml.core.config import ConfigError
from tml.core.errors import InputError
from tml.core.optimizers import fused_table_optimizer
from tml.projects.twhin.artifacts.run_dir import RunDir
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset, make_dataset
from tml.projects.twhin.parallel.planner import check_compute_kernels


class SaveDirError(InputError):
    """The save dir cannot hold this run's outputs."""


@dataclass
class PreparedRun:
    """Everything checked and planned before the process group exists."""

    config: TwhinConfig
    run_dir: RunDir
    train_data: EdgeDataset
    validation_data: EdgeDataset | None


def check_save_dir(run_dir: RunDir, config: TwhinConfig) -> None:
    """The save dir must be a writable directory whose earlier run (if any) has the same tables."""
    save_dir = run_dir.root
    if save_dir.exists() and not save_dir.is_dir():
        raise SaveDirError(f"save_dir {save_dir} exists and is not a directory")
    probe = save_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SaveDirError(f"save_dir {save_dir} is not writable (checked {probe})")
    previous = run_dir.previous_table_shapes()
    for index, table in enumerate(config.model.embeddings.tables):
        shape = previous.get(table.name)
        if shape and shape != (table.num_embeddings, table.embedding_dim):
            raise SaveDirError(
                f"model.embeddings.tables[{index}]: table {table.name!r} is "
                f"{table.num_embeddings}x{table.embedding_dim} but the run in {save_dir} "
                f"trained it as {shape[0]}x{shape[1]}; use a new --save_dir"
            )


def check_initial_checkpoint(run_dir: RunDir, config: TwhinConfig) -> None:
    """A warm start (used only when the save dir has no checkpoint yet) must name a checkpoint."""
    initial = config.training.initial_checkpoint_dir
    if config.warm_start.anchor > 0 and not initial:
        raise ConfigError(
            "warm_start.anchor: pulls rows toward a previous version's values; set "
            "training.initial_checkpoint_dir to that version's checkpoint (or the anchor to 0)"
        )
    if initial and not step_directories(run_dir.checkpoints):
        if not (Path(initial) / ".metadata").is_file():
            raise ConfigError(
                f"training.initial_checkpoint_dir {initial}: no checkpoint there (no .metadata); "
                "give another run's <save_dir>/checkpoints/step_N"
            )


def prepare(config: TwhinConfig, rank: int, world_size: int) -> PreparedRun:
    """Check the save dir and plan the data (parquet metadata only); no collectives."""
    run_dir = RunDir.at(config.training.save_dir)
    check_save_dir(run_dir, config)
    check_initial_checkpoint(run_dir, config)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    for index, table in enumerate(config.model.embeddings.tables):  # e.g. adam on CPU
        fused_table_optimizer(
            table.optimizer, device_type, f"model.embeddings.tables[{index}].optimizer"
        )
    check_compute_kernels(config.model, device_type)
    shape, seed = config.model.graph_shape(), config.training.seed
    train_data = make_dataset(
        shape, config.train_data, "train_data", rank=rank, world_size=world_size, seed=seed,
        shuffle=True,
    )  # fmt: skip
    validation_data = None
    if config.validation_data is not None and config.training.num_eval_steps != 0:
        validation_data = make_dataset(
            shape, config.validation_data, "validation_data", rank=rank, world_size=world_size,
            seed=seed, shuffle=False,
        )  # fmt: skip
    return PreparedRun(config, run_dir, train_data, validation_data)
