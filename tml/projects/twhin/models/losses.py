"""Losses over each positive's candidates: its own score among its negatives' scores.

A loss sees `scores (n, m)` and `target (n,)`: row i holds positive i's score in column
target[i] and its negatives' scores in the other columns. That is the layout the scorer builds
without copies (an in-batch score block's diagonal holds the positives themselves), and it makes
softmax one `cross_entropy`. A score of -inf marks a slot with no negative (e.g. a padded
positive's column): it is already the right value for softmax, and every loss gives such a slot
zero loss and zero gradient. Losses return the loss of each positive `(n,)`; they are registered
by name so the config picks one, and adding a loss is one class with `@register_loss`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch.nn import functional as F

from tml.core.registry import Registry

NO_NEGATIVE = float("-inf")
"""The score of a slot without a negative."""


class Loss(abc.ABC):
    """Per-positive loss; `margin` is used by the losses that have one."""

    name: ClassVar[str]  # set by the registry

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    @abc.abstractmethod
    def over_candidates(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`(n, m)` scores with positive i in column target[i] -> `(n,)` losses."""

    def __call__(self, positive: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        """The same loss from `positive (...)` and blocks of negatives `(..., m_i)`."""
        blocks = [positive.unsqueeze(-1), *negatives]
        scores = torch.cat([block.expand(*positive.shape, -1) for block in blocks], -1)
        target = torch.zeros(positive.numel(), dtype=torch.long, device=positive.device)
        loss = self.over_candidates(scores.reshape(-1, scores.shape[-1]), target)
        return loss.view(positive.shape)


LOSSES: Registry[Loss] = Registry("loss")
register_loss = LOSSES.register


def split_candidates(
    scores: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(positive (n,), negatives (n, m))`, the positive's own column set to NO_NEGATIVE."""
    column = target.unsqueeze(-1)
    return scores.gather(-1, column).squeeze(-1), scores.scatter(-1, column, NO_NEGATIVE)


def _mean_over_negatives(terms: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Row sums of loss terms over the number of real (finite) negatives (0 for a positive
    without negatives, e.g. alone in its batch with no uniform ones)."""
    return terms.sum(-1) / torch.isfinite(negatives).sum(-1).clamp(min=1)


@register_loss("logistic")
class Logistic(Loss):
    """Binary cross-entropy, label 1 for the positive and 0 for each negative (TwHIN's loss).

    The positive has weight 1 and its valid negatives share weight 1, so however many negatives
    are sampled they never swamp the positive signal:

        loss_i = softplus(-s_i) + mean_j softplus(s_ij)     (= BCE(s_i, 1) + mean_j BCE(s_ij, 0))
    """

    def over_candidates(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive, negatives = split_candidates(scores, target)
        terms = F.softplus(negatives)  # 0 at -inf
        return F.softplus(-positive) + _mean_over_negatives(terms, negatives)


@register_loss("softmax")
class Softmax(Loss):
    """Cross-entropy of picking the positive among itself and its negatives (PBG's softmax):

    loss_i = -s_i + log(exp(s_i) + sum_j exp(s_ij))

    i.e. `cross_entropy`, one fused log-softmax over the candidates (finite: the positive itself
    is always one of them).
    """

    def over_candidates(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, target, reduction="none")


@register_loss("ranking")
class MarginRanking(Loss):
    """Each negative should score at least `margin` below its positive:

        loss_i = mean_j max(0, margin - s_i + s_ij)

    (a mean, like logistic, so the number of negatives does not change the gradient scale).
    """

    def over_candidates(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive, negatives = split_candidates(scores, target)
        terms = (self.margin - positive.unsqueeze(-1) + negatives).clamp(min=0)
        return _mean_over_negatives(terms, negatives)
