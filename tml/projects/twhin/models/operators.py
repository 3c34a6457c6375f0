"""Relation operators: how a relation transforms the lhs embedding before it meets the rhs one.

    score(lhs, rel, rhs) = comparator( op_rel(e_lhs), e_rhs )

One module holds the operators of every relation of one kind (and tables) that the scorer scores
together: each parameter is stacked, `(relations, ...)`, and `forward(lhs, relation)` gathers the
parameters of each row's relation (PyTorch-BigGraph's dynamic relations), so a thousand relations
cost one set of tensor operations, not a thousand. `relation(i)` is one relation's operator as a
module on any shape, for ranking, export and search. Operators are registered by name so the
config picks one per relation; adding one is one class with `@register_operator` that says its
parameters at initialisation and how they transform a row of embeddings; optionally how the
operator moves across a dot product (its adjoint) or a distance (a translation's shift), which
lets the scorer score many corrupted sources without transforming each of them.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from tml.core.registry import Registry


class RelationOperator(nn.Module, abc.ABC):
    """The operators of `count` relations, parameters stacked on dim 0; maps lhs embeddings
    `(n, m, lhs_dim)` to the rhs space `(n, m, rhs_dim)`, row i by relation `relation[i]`."""

    name: ClassVar[str]  # set by the registry

    def __init__(self, lhs_dim: int, rhs_dim: int, count: int = 1) -> None:
        super().__init__()
        self.lhs_dim = lhs_dim
        self.rhs_dim = rhs_dim
        self.count = count
        for name, value in self.initial_parameters().items():
            stacked = value.expand(count, *value.shape).clone()
            self.register_parameter(name, nn.Parameter(stacked))

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        """Why this operator cannot join tables of these dims, or None when it can."""
        if lhs_dim != rhs_dim:
            return (
                f"operator {cls.name!r} needs equal lhs and rhs embedding_dim "
                f"(got {lhs_dim} and {rhs_dim}); use 'linear' to join different dims"
            )
        return None

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        """One relation's parameters at initialisation, by name (none by default)."""
        return {}

    @abc.abstractmethod
    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """`lhs (n, m, lhs_dim)` -> `(n, m, rhs_dim)`; `parameters[name] (n, ...)` are row i's."""

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """`(q, b)` with <op(x), rhs> = <x, q> + b for every x (b `(n, m, 1)`, or None for 0):
        the operator moved across a dot product; None when it cannot move (the default)."""
        return None

    def transform_shift(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """`rhs - c` when op(x) = x + c, so a distance can compare x with it; else None."""
        return None

    def _gathered(self, relation: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value[relation] for name, value in self.named_parameters(recurse=False)}

    def forward(self, lhs: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """`lhs (n, m, lhs_dim)`, `relation (n,)` (indices into the stack) -> `(n, m, rhs_dim)`."""
        return self.transform(lhs, self._gathered(relation))

    def adjoint(
        self, rhs: torch.Tensor, relation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """`transform_adjoint` of `rhs (n, m, rhs_dim)`, row i with relation `relation[i]`."""
        return self.transform_adjoint(rhs, self._gathered(relation))

    def shift(self, rhs: torch.Tensor, relation: torch.Tensor) -> torch.Tensor | None:
        """`transform_shift` of `rhs (n, m, rhs_dim)`, row i with relation `relation[i]`."""
        return self.transform_shift(rhs, self._gathered(relation))

    def parameters_of(self, index: int) -> dict[str, torch.Tensor]:
        """Relation `index`'s parameters, by name (views of the stacked ones)."""
        return {name: value[index] for name, value in self.named_parameters(recurse=False)}

    def relation(self, index: int) -> OneRelation:
        """Relation `index`'s operator alone, on embeddings of any shape."""
        return OneRelation(self, index)


class OneRelation(nn.Module):
    """One relation of a stacked operator: `(..., lhs_dim) -> (..., rhs_dim)`, sharing the
    stack's parameters (what ranking, export and search apply to whole tables)."""

    def __init__(self, stack: RelationOperator, index: int) -> None:
        super().__init__()
        self.stack = stack
        self.index = index

    def forward(self, lhs: torch.Tensor) -> torch.Tensor:
        relation = torch.full((1,), self.index, dtype=torch.long, device=lhs.device)
        out = self.stack(lhs.reshape(1, -1, lhs.shape[-1]), relation)
        return out.reshape(*lhs.shape[:-1], out.shape[-1])


OPERATORS: Registry[RelationOperator] = Registry("operator")
register_operator = OPERATORS.register


@register_operator("identity")
class Identity(RelationOperator):
    """op(x) = x: the relation only selects which tables meet (no parameters)."""

    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return lhs

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return rhs, None

    def transform_shift(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return rhs


@register_operator("translation")
class Translation(RelationOperator):
    """op(x) = x + t_r (TransE, TwHIN's operator). t_r starts at zero."""

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        return {"translation": torch.zeros(self.rhs_dim)}

    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return lhs + parameters["translation"].unsqueeze(-2)

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        translation = parameters["translation"].unsqueeze(-2)
        return rhs, (rhs * translation).sum(-1, keepdim=True)  # <x + t, y> = <x, y> + <t, y>

    def transform_shift(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return rhs - parameters["translation"].unsqueeze(-2)


@register_operator("diagonal")
class Diagonal(RelationOperator):
    """op(x) = x ∘ d_r, an element-wise scaling (DistMult with the dot comparator). d_r starts at 1."""

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        return {"diagonal": torch.ones(self.rhs_dim)}

    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return lhs * parameters["diagonal"].unsqueeze(-2)

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.transform(rhs, parameters), None  # symmetric


@register_operator("complex_diagonal")
class ComplexDiagonal(RelationOperator):
    """ComplEx: the first half of x is the real part, the second the imaginary part, and
    op(x) = x ⊙ r_r is a complex element-wise product. With the dot comparator the score is
    Re(<h ⊙ r, conj(t)>). r_r starts at 1 + 0i."""

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        if problem := super().dimension_problem(lhs_dim, rhs_dim):
            return problem
        if lhs_dim % 2:
            return f"operator 'complex_diagonal' needs an even embedding_dim (got {lhs_dim})"
        return None

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        half = self.rhs_dim // 2
        return {"real": torch.ones(half), "imaginary": torch.zeros(half)}

    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        real, imaginary = lhs.chunk(2, dim=-1)
        r_real = parameters["real"].unsqueeze(-2)
        r_imaginary = parameters["imaginary"].unsqueeze(-2)
        return torch.cat(
            [real * r_real - imaginary * r_imaginary, real * r_imaginary + imaginary * r_real],
            dim=-1,
        )

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Multiplication by the conjugate, conj(r)."""
        conjugate = {"real": parameters["real"], "imaginary": -parameters["imaginary"]}
        return self.transform(rhs, conjugate), None


@register_operator("linear")
class Linear(RelationOperator):
    """op(x) = A_r x, a full matrix (RESCAL-like); joins tables of different dims.
    A_r starts as the identity (or its rectangular cut)."""

    # Relations x embeddings per row up to which one product with every relation's matrix, then
    # each row's block, beats gathering a matrix per row (measured on CPU at dim 64: 1,000 rows
    # of 1 embedding, 4 relations: 1.5 ms against 17.5).
    EVERY_MATRIX_AT_MOST = 32
    matrix: nn.Parameter  # (relations, rhs_dim, lhs_dim), registered by the base class

    @classmethod
    def dimension_problem(cls, lhs_dim: int, rhs_dim: int) -> str | None:
        return None

    def initial_parameters(self) -> dict[str, torch.Tensor]:
        return {"matrix": torch.eye(self.rhs_dim, self.lhs_dim)}

    def transform(self, lhs: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        return lhs @ parameters["matrix"].mT  # (n, m, lhs_dim) @ (n, lhs_dim, rhs_dim)

    def transform_adjoint(
        self, rhs: torch.Tensor, parameters: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return rhs @ parameters["matrix"], None  # A^T y

    def forward(self, lhs: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        if self.count * lhs.shape[-2] <= self.EVERY_MATRIX_AT_MOST:
            return _through_own_matrix(lhs, self.matrix, relation)
        return super().forward(lhs, relation)

    def adjoint(
        self, rhs: torch.Tensor, relation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        if self.count * rhs.shape[-2] <= self.EVERY_MATRIX_AT_MOST:
            return _through_own_matrix(rhs, self.matrix.mT, relation), None
        return super().adjoint(rhs, relation)


def _through_own_matrix(
    x: torch.Tensor, matrices: torch.Tensor, relation: torch.Tensor
) -> torch.Tensor:
    """`x (n, m, k)` @ `matrices[relation[i]].T` for row i, as one product with every matrix
    `(R, p, k)` followed by a gather of each row's block -> `(n, m, p)`."""
    n, m, k = x.shape
    count, p, _ = matrices.shape
    every = (x.reshape(-1, k) @ matrices.reshape(-1, k).mT).view(n, m, count, p)
    return every.gather(2, relation.view(n, 1, 1, 1).expand(n, m, 1, p)).squeeze(2)
