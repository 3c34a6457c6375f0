"""Optimizer configs and their mapping to fused TorchRec table optimizers or plain torch ones.

Embedding tables use TorchRec's fused optimizers (the update happens inside the backward of the
fbgemm kernel, no dense gradient is ever built). Dense parameters (relation operators) use ordinary
`torch.optim` optimizers. Both read the same config block, as in the original TwHIN.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic
import torch

from tml.core.config import BaseConfig, require_exactly_one
from tml.core.lr_schedules import LearningRate
from tml.core.registry import Registry

DenseOptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""`params -> torch.optim.Optimizer`, what TorchRec's KeyedOptimizerWrapper takes."""


@dataclass
class FusedOptimizer:
    """What TorchRec needs to fuse one table's optimizer into its fbgemm kernel."""

    optimizer_class: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]  # for the torch optimizer class (apply_optimizer_in_backward)


class AlgorithmConfig(BaseConfig):
    """One optimizer algorithm's settings, and how it becomes a fused or a dense optimizer."""

    name: ClassVar[str]  # its key in an optimizer block, set by the registry

    lr: pydantic.NonNegativeFloat = pydantic.Field(description="Learning rate.")

    @abc.abstractmethod
    def fused(self, device_type: str, where: str) -> FusedOptimizer:
        """The fused table optimizer; `where` is this block's config path, for errors."""

    @abc.abstractmethod
    def dense(self, where: str) -> DenseOptimizerFactory:
        """The optimizer of dense (non-table) parameters."""


ALGORITHMS: Registry[AlgorithmConfig] = Registry("optimizer")
"""Optimizer algorithms by their key in an optimizer block (`adagrad: {lr: 0.1}`)."""


@ALGORITHMS.register("sgd")
class SgdConfig(AlgorithmConfig):
    """Plain SGD. `momentum` is only available for dense parameters (fused tables have none)."""

    momentum: pydantic.NonNegativeFloat = pydantic.Field(
        0.0, description="Momentum; dense parameters only, must be 0 for embedding tables."
    )

    def fused(self, device_type: str, where: str) -> FusedOptimizer:
        if self.momentum:
            raise ValueError(
                f"{where}.momentum: fused embedding-table SGD has no momentum; "
                "set it to 0 or use adagrad/rowwise_adagrad"
            )
        return FusedOptimizer(torch.optim.SGD, {"lr": self.lr})

    def dense(self, where: str) -> DenseOptimizerFactory:
        return lambda params: torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)


@ALGORITHMS.register("adagrad")
class AdagradConfig(AlgorithmConfig):
    """Adagrad: per-element accumulated squared gradients."""

    eps: pydantic.PositiveFloat = pydantic.Field(
        1e-8,
        description="Added to the denominator. Must be > 0: the original's 0 divides 0 by 0 "
        "(NaN) on rows whose gradient is exactly zero.",
    )

    def fused(self, device_type: str, where: str) -> FusedOptimizer:
        return FusedOptimizer(torch.optim.Adagrad, {"lr": self.lr, "eps": self.eps})

    def dense(self, where: str) -> DenseOptimizerFactory:
        return lambda params: torch.optim.Adagrad(params, lr=self.lr, eps=self.eps)


@ALGORITHMS.register("rowwise_adagrad")
class RowWiseAdagradConfig(AdagradConfig):
    """Adagrad with one accumulator per table row: the usual choice for large tables
    (memory of one float per row instead of one per element). Embedding tables only."""

    def fused(self, device_type: str, where: str) -> FusedOptimizer:
        from torchrec.optim import RowWiseAdagrad  # TorchRec's import is slow; tables only

        return FusedOptimizer(RowWiseAdagrad, {"lr": self.lr, "eps": self.eps})

    def dense(self, where: str) -> DenseOptimizerFactory:
        raise ValueError(
            f"{where}: row-wise Adagrad is for embedding tables; use sgd, adagrad or adam "
            "for dense parameters"
        )


@ALGORITHMS.register("adam")
class AdamConfig(AlgorithmConfig):
    """Adam. Fused Adam exists only in the CUDA fbgemm kernels; on CPU tables reject it."""

    betas: tuple[float, float] = pydantic.Field((0.9, 0.999), description="Moment decay rates.")
    eps: pydantic.PositiveFloat = pydantic.Field(1e-7, description="Denominator stabiliser.")

    def fused(self, device_type: str, where: str) -> FusedOptimizer:
        if device_type != "cuda":
            raise ValueError(
                f"{where}: fused Adam for embedding tables needs CUDA (the CPU fbgemm kernels "
                "support sgd, adagrad and rowwise_adagrad only)"
            )
        return FusedOptimizer(
            torch.optim.Adam, {"lr": self.lr, "betas": self.betas, "eps": self.eps}
        )

    def dense(self, where: str) -> DenseOptimizerFactory:
        return lambda params: torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps)


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
        require_exactly_one(self, list(ALGORITHMS), "optimizer ")
        return self

    @property
    def algorithm(self) -> AlgorithmConfig:
        """The one algorithm block that is set."""
        return next(block for name in ALGORITHMS if (block := getattr(self, name)) is not None)

    @property
    def algorithm_name(self) -> str:
        return self.algorithm.name

    def schedule(self) -> LearningRate:
        """The schedule to follow; a constant at the algorithm's `lr` when none is configured."""
        return self.learning_rate or LearningRate(constant=self.algorithm.lr)


def fused_table_optimizer(config: OptimizerConfig, device_type: str, where: str) -> FusedOptimizer:
    """The fused optimizer of one table. `where` is the config path, used in error messages."""
    algorithm = config.algorithm
    return algorithm.fused(device_type, f"{where}.{algorithm.name}")


def dense_optimizer_factory(config: OptimizerConfig, where: str) -> DenseOptimizerFactory:
    """A callable `params -> torch.optim.Optimizer` for dense (non-table) parameters."""
    algorithm = config.algorithm
    return algorithm.dense(f"{where}.{algorithm.name}")
