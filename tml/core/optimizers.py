"""Optimizer configs and their mapping to fused TorchRec table optimizers or plain torch ones.

Embedding tables use TorchRec's fused optimizers (the update happens inside the backward of the
fbgemm kernel, no dense gradient is ever built). Dense parameters (relation operators) use ordinary
`torch.optim` optimizers. Both read the same config block, as in the original TwHIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic
import torch

from tml.core.config import BaseConfig
from tml.core.errors import InputError
from tml.core.lr_schedules import LearningRate


class SgdConfig(BaseConfig):
    """Plain SGD. `momentum` is only available for dense parameters (fused tables have none)."""

    lr: pydantic.NonNegativeFloat = pydantic.Field(description="Learning rate.")
    momentum: pydantic.NonNegativeFloat = pydantic.Field(
        0.0, description="Momentum; dense parameters only, must be 0 for embedding tables."
    )


class AdagradConfig(BaseConfig):
    """Adagrad: per-element accumulated squared gradients."""

    lr: pydantic.NonNegativeFloat = pydantic.Field(description="Learning rate.")
    eps: pydantic.PositiveFloat = pydantic.Field(
        1e-8,
        description="Added to the denominator. Must be > 0: the original's 0 divides 0 by 0 "
        "(NaN) on rows whose gradient is exactly zero.",
    )


class RowWiseAdagradConfig(AdagradConfig):
    """Adagrad with one accumulator per table row: the usual choice for large tables
    (memory of one float per row instead of one per element). Embedding tables only."""


class AdamConfig(BaseConfig):
    """Adam. Fused Adam exists only in the CUDA fbgemm kernels; on CPU tables reject it."""

    lr: pydantic.NonNegativeFloat = pydantic.Field(description="Learning rate.")
    betas: tuple[float, float] = pydantic.Field((0.9, 0.999), description="Moment decay rates.")
    eps: pydantic.PositiveFloat = pydantic.Field(1e-7, description="Denominator stabiliser.")


AlgorithmConfig = SgdConfig | AdagradConfig | RowWiseAdagradConfig | AdamConfig


class OptimizerConfig(BaseConfig):
    """Exactly one algorithm block, plus an optional learning-rate schedule."""

    learning_rate: LearningRate | None = pydantic.Field(
        None,
        description="Learning-rate schedule; when omitted the algorithm's `lr` stays constant. "
        "When given it overrides `lr`.",
    )
    sgd: SgdConfig | None = pydantic.Field(None, description="Stochastic gradient descent.")
    adagrad: AdagradConfig | None = pydantic.Field(None, description="Adagrad.")
    rowwise_adagrad: RowWiseAdagradConfig | None = pydantic.Field(
        None, description="Row-wise Adagrad (embedding tables only)."
    )
    adam: AdamConfig | None = pydantic.Field(None, description="Adam (CUDA tables or dense).")

    @pydantic.model_validator(mode="after")
    def _exactly_one_algorithm(self) -> OptimizerConfig:
        chosen = [name for name in ALGORITHMS if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"set exactly one optimizer of {', '.join(ALGORITHMS)} (got {chosen or 'none'})"
            )
        return self

    @property
    def algorithm_name(self) -> str:
        return next(name for name in ALGORITHMS if getattr(self, name) is not None)

    @property
    def algorithm(self) -> AlgorithmConfig:
        return getattr(self, self.algorithm_name)

    def schedule(self) -> LearningRate:
        """The schedule to follow; a constant at the algorithm's `lr` when none is configured."""
        return self.learning_rate or LearningRate(constant=self.algorithm.lr)


ALGORITHMS = ("sgd", "adagrad", "rowwise_adagrad", "adam")


@dataclass
class FusedOptimizer:
    """What TorchRec needs to fuse one table's optimizer into its fbgemm kernel."""

    optimizer_class: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]  # for the torch optimizer class (apply_optimizer_in_backward)


def fused_table_optimizer(config: OptimizerConfig, device_type: str, where: str) -> FusedOptimizer:
    """The fused optimizer of one table. `where` is the config path, used in error messages."""
    from torchrec.optim import RowWiseAdagrad

    algorithm = config.algorithm
    name = config.algorithm_name
    if name == "sgd":
        if algorithm.momentum:
            raise InputError(
                f"{where}.sgd.momentum: fused embedding-table SGD has no momentum; "
                "set it to 0 or use adagrad/rowwise_adagrad"
            )
        return FusedOptimizer(torch.optim.SGD, {"lr": algorithm.lr})
    if name in ("adagrad", "rowwise_adagrad"):
        optimizer_class = torch.optim.Adagrad if name == "adagrad" else RowWiseAdagrad
        return FusedOptimizer(optimizer_class, {"lr": algorithm.lr, "eps": algorithm.eps})
    if device_type != "cuda":
        raise InputError(
            f"{where}.adam: fused Adam for embedding tables needs CUDA (the CPU fbgemm kernels "
            "support sgd, adagrad and rowwise_adagrad only)"
        )
    return FusedOptimizer(
        torch.optim.Adam, {"lr": algorithm.lr, "betas": algorithm.betas, "eps": algorithm.eps}
    )


def dense_optimizer_factory(config: OptimizerConfig, where: str) -> Any:
    """A callable `params -> torch.optim.Optimizer` for dense (non-table) parameters."""
    algorithm = config.algorithm
    name = config.algorithm_name
    if name == "sgd":
        return lambda params: torch.optim.SGD(params, lr=algorithm.lr, momentum=algorithm.momentum)
    if name == "adagrad":
        return lambda params: torch.optim.Adagrad(params, lr=algorithm.lr, eps=algorithm.eps)
    if name == "adam":
        return lambda params: torch.optim.Adam(
            params, lr=algorithm.lr, betas=algorithm.betas, eps=algorithm.eps
        )
    raise InputError(
        f"{where}.{name}: row-wise Adagrad is for embedding tables; use sgd, adagrad or adam "
        "for dense parameters"
    )
