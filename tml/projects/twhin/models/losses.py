"""Losses over one positive score and its negatives' scores, per positive edge.

A loss takes `positive (n,)`, `negative (n, m)` and `negative_mask (n, m)` (False marks a slot
with no valid negative) and returns the loss of each positive `(n,)`. Losses are registered by
name so the config picks one; adding a loss is one class with `@register_loss`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from tml.core.registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


class Loss:
    """Per-positive loss; `margin` is used by the losses that have one."""

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    def __call__(
        self, positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@register_loss("logistic")
class Logistic(Loss):
    """Binary cross-entropy, label 1 for the positive and 0 for each negative (TwHIN's loss).

    The positive has weight 1 and its valid negatives share weight 1, so however many negatives
    are sampled they never swamp the positive signal:

        loss_i = softplus(-s_i) + mean_j softplus(s_ij)     (= BCE(s_i, 1) + mean_j BCE(s_ij, 0))
    """

    def __call__(
        self, positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor
    ) -> torch.Tensor:
        positive_loss = F.binary_cross_entropy_with_logits(
            positive, torch.ones_like(positive), reduction="none"
        )
        negative_loss = F.binary_cross_entropy_with_logits(
            negative, torch.zeros_like(negative), reduction="none"
        )
        return positive_loss + _masked_mean(negative_loss, negative_mask)


@register_loss("softmax")
class Softmax(Loss):
    """Cross-entropy of picking the positive among itself and its negatives (PBG's softmax):

    loss_i = -s_i + log(exp(s_i) + sum_j exp(s_ij))
    """

    def __call__(
        self, positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor
    ) -> torch.Tensor:
        masked = negative.masked_fill(~negative_mask, float("-inf"))
        logits = torch.cat([positive.unsqueeze(1), masked], dim=1)
        return torch.logsumexp(logits, dim=1) - positive


@register_loss("ranking")
class MarginRanking(Loss):
    """Each negative should score at least `margin` below its positive:

        loss_i = mean_j max(0, margin - s_i + s_ij)

    (a mean, like logistic, so the number of negatives does not change the gradient scale).
    """

    def __call__(
        self, positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor
    ) -> torch.Tensor:
        violation = (self.margin - positive.unsqueeze(1) + negative).clamp(min=0)
        return _masked_mean(violation, negative_mask)
