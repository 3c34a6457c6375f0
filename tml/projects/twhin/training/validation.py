"""Evaluation on validation_data during training.

Two passes, both bounded by `num_eval_steps` batches and `eval_timeout_in_s`:
1. every rank scores its validation batches through the sharded model, with the data config's
   sampled negatives: the validation loss and `negatives_auc` (how often a positive beats them);
2. with `evaluation.ranking`, the same edges ranked against every entity: filtered MRR, Hits@k,
   mean rank and TwHIN's AUC (eval/ranking.py). Every rank scores the rows of its own shards and
   the counts are summed (eval/sharded_ranking.py): no process gathers a table.
The record also holds every rank's peak resident memory so far.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from tml.core.distributed import DistributedContext
from tml.core.train_loop import peak_rss_mb_per_rank
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset
from tml.projects.twhin.eval.evaluator import RankingEvaluator, scorer_with_state
from tml.projects.twhin.eval.ranking import auc_per_row
from tml.projects.twhin.eval.row_sources import ShardedRows
from tml.projects.twhin.parallel.sharded_model import ShardedTwhin
from tml.projects.twhin.parallel.tables import dense_state


def sampled_auc_sums(output: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over real positives of their per-positive AUC, number of real positives)."""
    per_positive = auc_per_row(
        output["competing_scores"], output["negative_scores"], output["negative_mask"]
    )
    weight = output["weight"]
    return (per_positive * weight).sum(), weight.sum()


class Validator:
    """Runs both evaluation passes whenever the train loop asks; all ranks call `__call__`."""

    def __init__(
        self,
        config: TwhinConfig,
        dataset: EdgeDataset,
        sharded: ShardedTwhin,
        ctx: DistributedContext,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.sharded = sharded
        self.ctx = ctx
        steps = config.training.num_eval_steps
        self.steps = dataset.steps_per_epoch if steps < 0 else min(steps, dataset.steps_per_epoch)
        ranked = self.steps * dataset.config.per_replica_batch_size * ctx.world_size
        self.ranking = RankingEvaluator(config, "validation_data", max_edges=ranked)

    def __call__(self, pipeline: Any) -> dict[str, Any]:
        started = time.perf_counter()
        metrics: dict[str, Any] = self._loss_pass(pipeline, started)
        if self.config.evaluation.ranking:
            metrics.update(self._ranking_pass(started))
        metrics["seconds"] = time.perf_counter() - started
        metrics["peak_rss_mb"] = peak_rss_mb_per_rank(self.ctx.device)
        return metrics

    @torch.no_grad()
    def _loss_pass(self, pipeline: Any, started: float) -> dict[str, float]:
        """Validation loss and negatives_auc; the train pipeline is detached meanwhile (its
        in-flight training batch is kept) and the model runs in eval mode."""
        device, timeout = self.ctx.device, self.config.training.eval_timeout_in_s
        model = pipeline.detach()
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * edges, auc, edges
        try:
            for index, batch in enumerate(self.dataset.batches(epoch=0)):
                if index >= self.steps:
                    break
                # All ranks must stop at the same step: agree on the timeout with a collective.
                late = torch.tensor([float(time.perf_counter() - started > timeout)], device=device)
                dist.all_reduce(late, op=dist.ReduceOp.MAX)
                if late.item():
                    break
                loss, output = model(batch.to(device))
                auc_sum, edges = sampled_auc_sums(output)
                sums += torch.stack([loss.double() * edges, auc_sum.double(), edges.double()])
        finally:
            model.train()
            pipeline.attach(model)
        dist.all_reduce(sums)
        count = float(sums[2].clamp(min=1))
        return {
            "loss": float(sums[0]) / count,
            "negatives_auc": float(sums[1]) / count,
            "edges": int(sums[2]),
        }

    def _ranking_pass(self, started: float) -> dict[str, float]:
        model, ctx = self.sharded.model, self.ctx
        source = ShardedRows(model, self.config.model, ctx.rank, ctx.world_size, ctx.device)
        budget = self.config.training.eval_timeout_in_s - (time.perf_counter() - started)
        metrics = self.ranking.evaluate(
            source, scorer_with_state(self.config, dense_state(model)), timeout_s=max(budget, 0.0)
        )
        return {f"ranked_{k}" if k in ("edges", "seconds") else k: v for k, v in metrics.items()}
