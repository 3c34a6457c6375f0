"""Relation operators: how a relation transforms the lhs embedding before it meets the rhs one.

    score(lhs, rel, rhs) = comparator( op_rel(e_lhs), e_rhs )

Each operator is a small `nn.Module` holding its relation's trained parameters, registered by name
so the config can pick one per relation. Adding an operator is one class with `@register_operator`.
Operators work on any leading shape `(..., lhs_dim) -> (..., rhs_dim)`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from tml.core.registry import Registry


class RelationOperator(nn.Module, abc.ABC):
    """Maps lhs embeddings `(..., lhs_dim)` to the rhs space `(..., rhs_dim)`."""

    name: ClassVar[str]  # set by the registry

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
                f"(got {lhs_dim} and {rhs_dim}); use 'linear' to join different dims"
            )
        return None

    @abc.abstractmethod
    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        """`(..., lhs_dim)` -> `(..., rhs_dim)`."""


OPERATORS: Registry[RelationOperator] = Registry("operator")
register_operator = OPERATORS.register


@register_operator("identity")
class Identity(RelationOperator):
    """op(x) = x: the relation only selects which tables meet (no parameters)."""

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        return lhs


@register_operator("translation")
class Translation(RelationOperator):
    """op(x) = x + t_r (TransE, TwHIN's operator). t_r starts at zero."""

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__(lhs_dim, rhs_dim)
        self.translation = nn.Parameter(torch.zeros(rhs_dim))

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        return lhs + self.translation


@register_operator("diagonal")
class Diagonal(RelationOperator):
    """op(x) = x ∘ d_r, an element-wise scaling (DistMult with the dot comparator). d_r starts at 1."""

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__(lhs_dim, rhs_dim)
        self.diagonal = nn.Parameter(torch.ones(rhs_dim))

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        return lhs * self.diagonal


@register_operator("complex_diagonal")
class ComplexDiagonal(RelationOperator):
    """ComplEx: the first half of x is the real part, the second the imaginary part, and
    op(x) = x ⊙ r_r is a complex element-wise product. With the dot comparator the score is
    Re(<h ⊙ r, conj(t)>). r_r starts at 1 + 0i."""

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__(lhs_dim, rhs_dim)
        half = rhs_dim // 2
        self.real = nn.Parameter(torch.ones(half))
        self.imaginary = nn.Parameter(torch.zeros(half))

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        if problem := super().dimension_problem(lhs_dim, rhs_dim):
            return problem
        if lhs_dim % 2:
            return f"operator 'complex_diagonal' needs an even embedding_dim (got {lhs_dim})"
        return None

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        real, imaginary = lhs.chunk(2, dim=-1)
        return torch.cat(
            [
                real * self.real - imaginary * self.imaginary,
                real * self.imaginary + imaginary * self.real,
            ],
            dim=-1,
        )


@register_operator("linear")
class Linear(RelationOperator):
    """op(x) = A_r x, a full matrix (RESCAL-like); joins tables of different dims.
    A_r starts as the identity (or its rectangular cut)."""

    def __init__(self, lhs_dim: int, rhs_dim: int) -> None:
        super().__init__(lhs_dim, rhs_dim)
        self.matrix = nn.Parameter(torch.eye(rhs_dim, lhs_dim))

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        return None

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        return lhs @ self.matrix.T
