"""Periodic evaluation on validation_data during training: loss and sampled AUC.

AUC here is TwHIN's metric: the probability that a positive edge scores above one of its
sampled negatives (ties count half), averaged over positives. Full filtered ranking metrics
(MRR, Hits@k) live in the evaluation module.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from tml.projects.twhin.data.reader import EdgeDataset


def sampled_auc_sums(output: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over real positives of their per-positive AUC, number of real positives)."""
    positive = output["positive_scores"].unsqueeze(1)
    negative, mask = output["negative_scores"], output["negative_mask"].float()
    wins = ((positive > negative).float() + 0.5 * (positive == negative).float()) * mask
    per_positive = wins.sum(1) / mask.sum(1).clamp(min=1)
    weight = output["weight"]
    return (per_positive * weight).sum(), weight.sum()


@torch.no_grad()
def evaluate(
    pipeline: Any,
    dataset: EdgeDataset,
    max_steps: int,
    timeout_s: float,
    device: torch.device,
) -> dict[str, float]:
    """Run up to `max_steps` validation batches (all if negative) on every rank; global metrics.

    The train pipeline is detached meanwhile (its in-flight training batch is kept) and the
    model runs in eval mode, so nothing is updated.
    """
    model = pipeline.detach()
    model.eval()
    steps = dataset.steps_per_epoch if max_steps < 0 else min(max_steps, dataset.steps_per_epoch)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * edges, auc sum, edges
    started = time.perf_counter()
    try:
        for index, batch in enumerate(dataset.batches(epoch=0)):
            if index >= steps:
                break
            # All ranks must stop at the same step: agree on the timeout with a collective.
            out_of_time = torch.tensor(
                [float(time.perf_counter() - started > timeout_s)], device=device
            )
            dist.all_reduce(out_of_time, op=dist.ReduceOp.MAX)
            if out_of_time.item():
                break
            loss, output = model(batch.to(device))
            auc_sum, edges = sampled_auc_sums(output)
            sums += torch.stack([loss.double() * edges, auc_sum.double(), edges.double()])
    finally:
        model.train()
        pipeline.attach(model)
    dist.all_reduce(sums)
    edges = float(sums[2].clamp(min=1))
    return {
        "loss": float(sums[0]) / edges,
        "auc": float(sums[1]) / edges,
        "edges": int(sums[2]),
        "seconds": time.perf_counter() - started,
    }
