"""Early stopping: is a validation metric still improving, and which evaluation was the best.

`Plateau` is pure bookkeeping over the evaluations it is shown, in order; its state
(`PlateauState`) is saved with every checkpoint, so a run killed and resumed counts the same
evaluations as one never interrupted and stops at the same step. Deciding which ranks see which
value, and keeping the best checkpoint, is the trainer's job.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tml.core.training_config import EarlyStoppingConfig


@dataclass(frozen=True)
class PlateauState:
    """The best evaluation so far and how many evaluations have come since without beating it."""

    metric: str
    best_value: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)  # every metric of the best one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> PlateauState:
        return cls(
            metric=str(saved["metric"]),
            best_value=None if saved.get("best_value") is None else float(saved["best_value"]),
            best_step=None if saved.get("best_step") is None else int(saved["best_step"]),
            evaluations_since_best=int(saved.get("evaluations_since_best", 0)),
            best_metrics=dict(saved.get("best_metrics") or {}),
        )


class Plateau:
    """Counts evaluations without an improvement of `config.metric` by more than `min_delta`."""

    def __init__(
        self, config: EarlyStoppingConfig, higher_is_better: bool, state: PlateauState | None = None
    ) -> None:
        self.config = config
        self.higher_is_better = higher_is_better
        self.state = state if state is not None else PlateauState(config.metric)

    def improves(self, value: float) -> bool:
        """Whether `value` would be a new best (NaN never is: a diverged model is not better)."""
        best = self.state.best_value
        if math.isnan(value):
            return False
        if best is None:
            return True
        delta = self.config.min_delta
        return value > best + delta if self.higher_is_better else value < best - delta

    def observe(self, step: int, metrics: dict[str, Any]) -> bool:
        """Count the evaluation at `step`; True when it is the new best."""
        value = float(metrics[self.config.metric])
        if self.improves(value):
            self.state = PlateauState(self.config.metric, value, step, 0, dict(metrics))
            return True
        self.state = replace(
            self.state, evaluations_since_best=self.state.evaluations_since_best + 1
        )
        return False

    @property
    def exhausted(self) -> bool:
        """Patience has run out: `patience` evaluations in a row did not improve."""
        return self.state.evaluations_since_best >= self.config.patience
