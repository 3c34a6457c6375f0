"""Checkpoints with torch.distributed.checkpoint: sharded, resharding on load, never half-visible.

Layout under `<save_dir>/checkpoints/`:

    step_<N>/.metadata, __<rank>_0.distcp    DCP files: model (all table shards, dense params)
                                             and optimizer state, any world size can load them
    step_<N>/rank_<r>.pt                     that rank's torch/numpy RNG state
    step_<N>/trainer_state.json              step, epoch, data position; written last

A checkpoint is written into `.tmp-step_<N>/` and renamed to `step_<N>/` only after every rank
finished writing, so a crash mid-save leaves the previous checkpoint as the newest complete one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def is_complete(path: Path) -> bool:
    """A published checkpoint holds DCP metadata and the trainer state (written last)."""
    return (path / ".metadata").is_file() and (path / TRAINER_STATE).is_file()


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete `step_<N>` folders, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and is_complete(child):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / TRAINER_STATE).read_text())


def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints of one run (all ranks call every method)."""

    def __init__(self, directory: str | Path, keep: int | None, rank: int) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.rank = rank

    def latest(self) -> Path | None:
        found = complete_checkpoints(self.directory)
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
        """Write `state` (DCP-able dict) and publish it as `step_<step>`; returns its path."""
        final = self.directory / f"step_{step}"
        staging = self.directory / f".tmp-step_{step}"
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        dist.barrier()
        dcp.save(state, checkpoint_id=str(staging))
        torch.save(capture_rng(), staging / f"rank_{self.rank}.pt")
        dist.barrier()
        if self.rank == 0:
            state_file = staging / TRAINER_STATE
            with open(state_file, "w") as handle:
                json.dump(trainer_state, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            if final.exists():  # re-saving a step after a resume: replace it
                shutil.rmtree(final)
            os.replace(staging, final)
            self._prune()
        dist.barrier()
        return final

    def load(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load `path` into `state` in place (resharding as needed); returns the trainer state."""
        dcp.load(state, checkpoint_id=str(path))
        rng_file = path / f"rank_{self.rank}.pt"
        if rng_file.is_file():  # absent when resuming on more ranks than wrote the checkpoint
            restore_rng(torch.load(rng_file, weights_only=False))
        return read_trainer_state(path)

    def _prune(self) -> None:
        if self.keep is None:
            return
        for path in complete_checkpoints(self.directory)[: -self.keep]:
            log.info("removing old checkpoint %s (checkpoint_max_to_keep=%d)", path, self.keep)
            shutil.rmtree(path, ignore_errors=True)
