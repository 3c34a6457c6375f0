"""Per-edge scores for validation: the scorer's candidate blocks split back into each positive's
score, its negatives' scores, the score each negative competes with, and a mask, in batch order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tml.projects.twhin.models.losses import NO_NEGATIVE, split_candidates


@dataclass
class ChunkScores:
    """A bucket of positives (chunks of one width, see `Bucket`) or a part of one, each with its
    candidates (see losses.py): one `(n, m)` score matrix per side, the positive in column
    `target`, and their loss."""

    loss: torch.Tensor  # (n,) loss of each positive
    target: torch.Tensor  # (n,) the positive's column in each side's scores
    sides: list[torch.Tensor]  # [(n, m)]: rhs and lhs corruptions, or one of each per side

    def edge_scores(self) -> dict[str, torch.Tensor]:
        """Per-edge scores `(n, ...)` for validation: each negative with the positive it
        competes with (in the order of `sides`)."""
        positives, negatives, competing = [], [], []
        for scores in self.sides:
            positive, negative = split_candidates(scores.detach(), self.target)
            positives.append(positive)
            negatives.append(negative)
            competing.append(positive.unsqueeze(-1).expand_as(negative))
        negative = torch.cat(negatives, -1)
        return {
            "positive_scores": positives[0],
            "negative_scores": negative.masked_fill(negative == NO_NEGATIVE, 0.0),
            "competing_scores": torch.cat(competing, -1),
            "negative_mask": negative != NO_NEGATIVE,
        }


def edge_scores(
    parts: list[ChunkScores], size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Scores in batch order (the parts are consecutive rows); padding rows are 0 and masked."""
    per_group = [part.edge_scores() for part in parts]
    if not per_group:  # an all-padding batch
        none = torch.zeros(size, 0, device=device)
        return {
            "positive_scores": torch.zeros(size, device=device),
            "negative_scores": none,
            "competing_scores": none,
            "negative_mask": none.bool(),
        }
    width = max(scores["negative_mask"].shape[1] for scores in per_group)
    out = {}
    for key in per_group[0]:
        rows = [scores[key] for scores in per_group]
        if key != "positive_scores":  # groups may differ in their number of negatives
            rows = [F.pad(row, (0, width - row.shape[1])) for row in rows]
        real = torch.cat(rows)
        out[key] = torch.cat([real, real.new_zeros((size - real.shape[0], *real.shape[1:]))])
    return out
