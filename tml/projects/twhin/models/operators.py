"""Relation operators: how a relation transforms the lhs embedding before it meets the rhs one.

score(lhs, rel, rhs) = < operator_rel(e_lhs), e_rhs >      (TwHIN's dot-product comparator)

Each operator is a small `nn.Module` holding its relation's trained parameters, registered by name
so the config can pick one per relation. Adding an operator is one class with `@register_operator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

OPERATORS: dict[str, type[RelationOperator]] = {}


def register_operator(name: str) -> Callable[[type[RelationOperator]], type[RelationOperator]]:
    """Class decorator adding an operator to `OPERATORS` under `name`."""

    def register(cls: type[RelationOperator]) -> type[RelationOperator]:
        cls.name = name
        OPERATORS[name] = cls
        return cls

    return register


class RelationOperator(nn.Module):
    """Maps lhs embeddings `(..., lhs_dim)` to the rhs space `(..., rhs_dim)`."""

    name: ClassVar[str]

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__()
        self.lhs_dim = lhs_dim
        self.rhs_dim = rhs_dim

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        """Why this operator cannot join tables of these dims, or None when it can."""
        if lhs_dim != rhs_dim:
            return (
                f"operator {cls.name!r} needs equal lhs and rhs embedding_dim "
                f"(got {lhs_dim} and {rhs_dim})"
            )
        return None


@register_operator("translation")
class Translation(RelationOperator):
    """TransE-style translation, TwHIN's operator: op(x) = x + t_rel, with t_rel learned.

    Starts at zero, so training begins from the plain dot product and learns each relation's offset.
    """

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__(lhs_dim, rhs_dim)
        self.translation = nn.Parameter(torch.zeros(rhs_dim))

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        return lhs + self.translation
