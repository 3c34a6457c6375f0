"""Comparators: how a transformed lhs embedding and an rhs embedding become one score.

Each comparator scores aligned pairs (`aligned`, broadcasting over leading dims) and all pairs of
two sets (`all_pairs`, one (batched) matrix product, used for shared and in-batch negatives and
ranking evaluation).
Comparators are symmetric. Registered by name; adding one is one class with `@register_comparator`.

`from_inner_products` and `translation_invariant` say how a relation operator can be moved across
the comparator (operators.py), so the scorer can score many corrupted sources op_r(x) against a
target without transforming each x for each relation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
from torch.nn import functional as F

from tml.core.registry import Registry


class Comparator(abc.ABC):
    """Scores of (transformed lhs, rhs) pairs; larger means more likely an edge."""

    name: ClassVar[str]  # set by the registry
    translation_invariant: ClassVar[bool] = False  # score(a + c, b + c) = score(a, b)

    @abc.abstractmethod
    def aligned(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """`(..., d)` x `(..., d)` -> `(...)`, broadcasting leading dims."""

    @abc.abstractmethod
    def all_pairs(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """`(..., n, d)` x `(..., m, d)` -> `(..., n, m)` (leading dims: a batch of sets)."""

    def from_inner_products(
        self, inner: InnerProducts, squared_norms: SquaredNorms
    ) -> torch.Tensor | None:
        """Scores from the pairs' inner products `inner()` and, if needed, `squared_norms()`
        (|a|², |b|², broadcasting against them); None when those do not determine them."""
        return None


InnerProducts = Callable[[], torch.Tensor]
SquaredNorms = Callable[[], tuple[torch.Tensor, torch.Tensor]]

COMPARATORS: Registry[Comparator] = Registry("comparator")
register_comparator = COMPARATORS.register


@register_comparator("dot")
class Dot(Comparator):
    """<a, b> (TwHIN's comparator)."""

    def from_inner_products(
        self, inner: InnerProducts, squared_norms: SquaredNorms
    ) -> torch.Tensor | None:
        return inner()

    def aligned(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return (lhs * rhs).sum(-1)

    def all_pairs(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return lhs @ rhs.mT


@register_comparator("cos")
class Cosine(Comparator):
    """<a, b> / (|a| |b|): the dot product of unit vectors, blind to embedding norms."""

    def aligned(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return (F.normalize(lhs, dim=-1) * F.normalize(rhs, dim=-1)).sum(-1)

    def all_pairs(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return F.normalize(lhs, dim=-1) @ F.normalize(rhs, dim=-1).mT

    def from_inner_products(
        self, inner: InnerProducts, squared_norms: SquaredNorms
    ) -> torch.Tensor | None:
        lhs, rhs = squared_norms()  # |x| clamped at 1e-12 as F.normalize does
        return inner() / (lhs.sqrt().clamp(min=1e-12) * rhs.sqrt().clamp(min=1e-12))


@register_comparator("l2")
class NegativeDistance(Comparator):
    """-|a - b|: classic TransE with the translation operator."""

    translation_invariant = True

    def aligned(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return -(lhs - rhs).pow(2).sum(-1).clamp(min=1e-12).sqrt()

    def all_pairs(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        squared = (
            lhs.pow(2).sum(-1, keepdim=True) + rhs.pow(2).sum(-1).unsqueeze(-2) - 2 * lhs @ rhs.mT
        )
        return -squared.clamp(min=1e-12).sqrt()

    def from_inner_products(
        self, inner: InnerProducts, squared_norms: SquaredNorms
    ) -> torch.Tensor | None:
        lhs, rhs = squared_norms()
        return -(lhs + rhs - 2 * inner()).clamp(min=1e-12).sqrt()


@register_comparator("l1")
class NegativeManhattan(Comparator):
    """-|a - b|_1: TransE with the L1 norm (PyKEEN's TransE default)."""

    translation_invariant = True

    def aligned(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        return -(lhs - rhs).abs().sum(-1)

    def all_pairs(self, lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        if rhs.dim() < lhs.dim():  # one shared set against a batch of sets
            rhs = rhs.expand(*lhs.shape[:-2], *rhs.shape)
        return -torch.cdist(lhs, rhs, p=1)
