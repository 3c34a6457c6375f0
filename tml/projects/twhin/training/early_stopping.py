"""Early stopping during training: watch a validation metric, keep the best checkpoint, stop on a
plateau (`training.early_stopping`).

After each validation the ranks take rank 0's metrics (a broadcast), so they count the same
evaluations and stop after the same step. A new best is checkpointed at once, whatever the
checkpoint cadence, and `checkpoints/best.json` is pointed at it once it is published; pruning
never removes it (tml/core/checkpoint.py). The count (`PlateauState`) is saved in every
checkpoint's trainer_state.json, so a resumed run stops where an uninterrupted one would, and a
run that already stopped has nothing left to do when started again.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist

from tml.core.checkpoint import (
    BEST_POINTER,
    CheckpointManager,
    complete_checkpoints,
    is_complete,
    read_best,
    read_trainer_state,
)
from tml.core.early_stopping import Plateau, PlateauState
from tml.core.train_loop import AfterEvaluation
from tml.core.training_config import EarlyStoppingConfig
from tml.projects.twhin.config import VALIDATION_METRICS
from tml.projects.twhin.training.state import StartPoint

log = logging.getLogger(__name__)

STATE_KEY = "early_stopping"
"""trainer_state.json's key for the saved `PlateauState`."""
KEPT_COUNTS = ("edges", "ranked_edges")
"""Besides the metrics, what best.json records of the best evaluation: how many edges it saw."""


class EarlyStopper:
    """The trainer's early stopping: every rank calls every method, in the same order."""

    def __init__(self, config: EarlyStoppingConfig, checkpoints: CheckpointManager) -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.plateau = Plateau(config, higher_is_better=VALIDATION_METRICS[config.metric])
        self._best_to_mark: int | None = None  # a new best whose checkpoint is not written yet

    @property
    def exhausted(self) -> bool:
        return self.plateau.exhausted

    def begin(self, start: StartPoint, eval_every: int) -> None:
        """Say what will happen; go on counting from the checkpoint the run resumed, and point
        best.json where that checkpoint's count says the best is (a crash may have come between
        the two writes)."""
        direction = "higher" if self.plateau.higher_is_better else "lower"
        log.info(
            "early stopping: stop after %d validations (every %d steps) without validation %s "
            "improving by more than %g (%s is better); the best checkpoint is kept (%s) and "
            "exported", self.config.patience, eval_every, self.config.metric,
            self.config.min_delta, direction, self.checkpoints.directory / BEST_POINTER,
        )  # fmt: skip
        saved = read_trainer_state(start.checkpoint).get(STATE_KEY) if start.checkpoint else None
        if saved is not None and saved.get("metric") == self.config.metric:
            self.plateau.state = PlateauState.from_dict(saved)
            state = self.plateau.state
            log.info(
                "early stopping resumed: best validation %s %s at step %s, %d of %d validations "
                "since without an improvement", state.metric, _format(state.best_value),
                state.best_step, state.evaluations_since_best, self.config.patience,
            )  # fmt: skip
        elif saved is not None:
            log.warning(
                "early stopping watched validation %s before this resume and watches %s now: "
                "counting from here", saved.get("metric"), self.config.metric,
            )  # fmt: skip
        if self.checkpoints.rank == 0:
            self._point_best_at(self.plateau.state)

    def _point_best_at(self, state: PlateauState) -> None:
        """Rank 0: make best.json name the best checkpoint of `state` (or nothing)."""
        if state.best_step is None:
            self.checkpoints.forget_best()
            return
        recorded = read_best(self.checkpoints.directory)
        if recorded is not None and recorded.get("step") == state.best_step:
            return
        if not is_complete(self.checkpoints.directory / f"step_{state.best_step}"):
            log.warning(
                "the best checkpoint (step %d) is gone or damaged; the next best one will be "
                "kept, and until then the export is the last checkpoint's", state.best_step,
            )  # fmt: skip
            self.checkpoints.forget_best()
            return
        self.checkpoints.mark_best(state.best_step, self._best_record())

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint saves under `STATE_KEY`."""
        return self.plateau.state.to_dict()

    def observe(self, step: int, metrics: dict[str, Any]) -> AfterEvaluation:
        """Count the validation at `step` (rank 0's metrics decide for every rank)."""
        kept = {k: v for k, v in metrics.items() if k in VALIDATION_METRICS or k in KEPT_COUNTS}
        if dist.is_initialized() and dist.get_world_size() > 1:
            shared = [kept]
            dist.broadcast_object_list(shared, src=0)
            kept = shared[0]
        before = self.plateau.state
        improved = self.plateau.observe(step, kept)
        name, value = self.config.metric, float(kept[self.config.metric])
        if improved:
            self._best_to_mark = step
            log.info("validation %s %s: the best so far; keeping the checkpoint of step %d",
                     name, _format(value), step)  # fmt: skip
        else:
            log.info(
                "validation %s %s does not beat the best, %s at step %s, by more than %g: %d of %d "
                "validations without an improvement",
                name, _format(value), _format(before.best_value), before.best_step,
                self.config.min_delta, self.plateau.state.evaluations_since_best,
                self.config.patience,
            )  # fmt: skip
        return AfterEvaluation(checkpoint=improved, finish=self.plateau.exhausted)

    def saved(self, step: int) -> None:
        """After the checkpoint of `step` is published: point best.json at it if it is the best."""
        if self._best_to_mark == step:
            self.checkpoints.mark_best(step, self._best_record())
            self._best_to_mark = None

    def _best_record(self) -> dict[str, Any]:
        state = self.plateau.state
        return {
            "metric": state.metric,
            "value": state.best_value,
            "higher_is_better": self.plateau.higher_is_better,
            "metrics": state.best_metrics,
        }

    def log_stop(self, step: int, total_steps: int) -> None:
        state = self.plateau.state
        log.info(
            "early stopping at step %d of %d: validation %s has not improved on %s (step %s) by "
            "more than %g for %d validations (patience %d)", step, total_steps, state.metric,
            _format(state.best_value), state.best_step, self.config.min_delta,
            state.evaluations_since_best, self.config.patience,
        )  # fmt: skip

    def export_choice(self) -> str | None:
        """`best` when the best checkpoint is there to export (saying so), else None (the last)."""
        best = self.plateau.state.best_step
        path = self.checkpoints.directory / f"step_{best}"
        if best is None or not is_complete(path):
            why = "no validation yet" if best is None else f"{path} is gone or damaged"
            log.warning("no best checkpoint to export (%s); exporting the last", why)
            return None
        last = complete_checkpoints(self.checkpoints.directory)[-1]
        log.info(
            "exporting the best checkpoint, %s (validation %s %s), %s", path,
            self.config.metric, _format(self.plateau.state.best_value),
            "which is the last" if last == path else f"not the last ({last.name})",
        )  # fmt: skip
        return "best"


def _format(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"
