"""Losses over one positive score and its negatives' scores, per positive edge.

A loss takes `positive (...)` and one or more blocks of negative scores `(..., m_i)` (the same
leading shape; the scorer passes in-batch and uniform negatives as separate blocks, some of
them transposed views, so nothing is concatenated or copied). A score of -inf marks a slot
with no negative (e.g. a positive's own slot among the in-batch pairs): it is already the right
value for softmax, and every loss gives such a slot zero loss and zero gradient. It returns the
loss of each positive `(...)`. Losses are registered by name so the config picks one; adding a
loss is one class with `@register_loss`.
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

    def __call__(self, positive: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _mean_over_negatives(
    positive: torch.Tensor, per_block: list[torch.Tensor], negatives: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Sum of the blocks' row sums of loss terms over the number of real (finite) negatives
    (0 for a positive without negatives, e.g. alone in its batch with no uniform ones)."""
    total, count = torch.zeros_like(positive), torch.zeros_like(positive)
    for terms, block in zip(per_block, negatives, strict=True):
        total = total + terms.sum(dim=-1)
        count = count + torch.isfinite(block).sum(dim=-1)
    return total / count.clamp(min=1)


@register_loss("logistic")
class Logistic(Loss):
    """Binary cross-entropy, label 1 for the positive and 0 for each negative (TwHIN's loss).

    The positive has weight 1 and its valid negatives share weight 1, so however many negatives
    are sampled they never swamp the positive signal:

        loss_i = softplus(-s_i) + mean_j softplus(s_ij)     (= BCE(s_i, 1) + mean_j BCE(s_ij, 0))
    """

    def __call__(self, positive: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        per_block = [F.softplus(block) for block in negatives]  # 0 at -inf
        return F.softplus(-positive) + _mean_over_negatives(positive, per_block, negatives)


@register_loss("softmax")
class Softmax(Loss):
    """Cross-entropy of picking the positive among itself and its negatives (PBG's softmax):

    loss_i = -s_i + log(exp(s_i) + sum_j exp(s_ij))

    computed block by block around a shift of at least s_i, so the sum stays finite and above 0
    even when a positive has no negative at all.
    """

    def __call__(self, positive: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        shift = positive
        for block in negatives:
            shift = torch.maximum(shift, block.amax(dim=-1))
        shift = shift.detach()  # any constant shift gives the same value and gradient
        total = torch.exp(positive - shift)
        for block in negatives:
            total = total + torch.exp(block - shift.unsqueeze(-1)).sum(dim=-1)
        return shift + torch.log(total) - positive


@register_loss("ranking")
class MarginRanking(Loss):
    """Each negative should score at least `margin` below its positive:

        loss_i = mean_j max(0, margin - s_i + s_ij)

    (a mean, like logistic, so the number of negatives does not change the gradient scale).
    """

    def __call__(self, positive: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        target = (self.margin - positive).unsqueeze(-1)
        per_block = [(target + block).clamp(min=0) for block in negatives]
        return _mean_over_negatives(positive, per_block, negatives)
