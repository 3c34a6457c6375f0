"""The trainer's position, saved with every checkpoint as `trainer_state.json`.

The step counts optimizer updates; the data position counts batches of the current data layout.
They differ after a resume on another world size or batch size, where the position follows the
edges already consumed, so the position is kept as an offset from the step.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerState:
    """What a checkpoint records about the run besides its tensors (tml/core/checkpoint.py adds
    the file manifest); the field names are trainer_state.json's keys."""

    step: int
    epoch: int
    step_in_epoch: int
    world_size: int
    per_replica_batch_size: int
    steps_per_epoch: int
    seed: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainerState:
        """From trainer_state.json's contents (other keys, like the manifest, are ignored)."""
        missing = [f.name for f in fields(cls) if f.name not in saved]
        if missing:
            raise ValueError(f"trainer_state.json lacks {', '.join(missing)}")
        return cls(**{f.name: int(saved[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class StartPoint:
    """The step a run starts at, where in the data that is, and the checkpoint it resumed."""

    step: int
    epoch: int
    step_in_epoch: int
    checkpoint: Path | None = None  # None: a new run (or a warm start)

    def position_offset(self, steps_per_epoch: int) -> int:
        """Data position minus step (0 unless the world size or batch size changed)."""
        return self.epoch * steps_per_epoch + self.step_in_epoch - self.step

    @classmethod
    def resumed(
        cls, path: Path, saved: TrainerState, world_size: int, batch_size: int,
        steps_per_epoch: int,
    ) -> StartPoint:  # fmt: skip
        """The saved position, mapped by edges consumed when world size or batch size changed."""
        epoch, in_epoch = saved.epoch, saved.step_in_epoch
        if (saved.world_size, saved.per_replica_batch_size) != (world_size, batch_size):
            edges = in_epoch * saved.per_replica_batch_size * saved.world_size
            in_epoch = edges // (batch_size * world_size)
            log.warning(
                "world size or batch size changed since %s; resuming epoch %d at step %d",
                path, epoch, in_epoch,
            )  # fmt: skip
        if in_epoch >= steps_per_epoch:
            epoch, in_epoch = epoch + 1, 0
        log.info(
            "resumed from %s at step %d (epoch %d, step %d of it)", path, saved.step, epoch,
            in_epoch,
        )  # fmt: skip
        return cls(saved.step, epoch, in_epoch, path)
