"""Losses over one positive score and its negatives' scores, per positive edge.

Every loss takes `positive (n,)`, `negative (n, m)` and `negative_mask (n, m)` (False marks a slot
with no valid negative) and returns the loss of each positive `(n,)`. Registered by name so the
config picks one; adding a loss is one function with `@register_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, LossFunction] = {}


def register_loss(name: str) -> Callable[[LossFunction], LossFunction]:
    """Function decorator adding a loss to `LOSSES` under `name`."""

    def register(function: LossFunction) -> LossFunction:
        LOSSES[name] = function
        return function

    return register


@register_loss("logistic")
def logistic_loss(
    positive: torch.Tensor, negative: torch.Tensor, negative_mask: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy with label 1 for the positive and label 0 for each negative (TwHIN).

    Weighting: the positive has weight 1 and its valid negatives share weight 1 (each 1/m_valid),
    so however many negatives are sampled they never swamp the positive signal:

        loss_i = softplus(-s_i) + mean_j softplus(s_ij)      (= BCE(s_i, 1) + mean_j BCE(s_ij, 0))
    """
    positive_loss = F.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive), reduction="none"
    )
    negative_loss = F.binary_cross_entropy_with_logits(
        negative, torch.zeros_like(negative), reduction="none"
    )
    mask = negative_mask.to(negative_loss.dtype)
    valid = mask.sum(dim=1).clamp(min=1.0)
    return positive_loss + (negative_loss * mask).sum(dim=1) / valid
