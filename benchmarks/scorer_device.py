"""The scorer alone (forward + backward of `EdgeScorer`) on CPU and, where there is one, a GPU.

    python benchmarks/scorer_device.py [--batch 100000] [--steps 20]

The scorer is plain PyTorch, so it runs where TorchRec's kernels are not installed (e.g. a GPU
box without fbgemm-gpu): this checks that CPU and GPU give the same loss and gradients for the
same batch, and measures positive edges/s of the scoring step on each device, with the bench
shape (dim 64, 4 relations mixed 50/30/15/5 %, chunks of 50, 50 uniform negatives per chunk,
translation + dot, softmax). The table lookup is not part of it: this is the step's compute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tml.projects.twhin.batch.layout import SlotLayout  # noqa: E402
from tml.projects.twhin.models.config import TwhinModelConfig  # noqa: E402
from tml.projects.twhin.models.scorer import EdgeScorer  # noqa: E402

DIM, RELATIONS, MIX = 64, 4, (0.5, 0.3, 0.15, 0.05)
IN_BATCH, UNIFORM = 49, 50


class LookedUp:
    """What the scorer reads of TorchRec's KeyedTensor: the pooled rows, by table."""

    def __init__(self, values: torch.Tensor) -> None:
        self._values = values

    def values(self) -> torch.Tensor:
        return self._values

    def keys(self) -> list[str]:
        return ["entity"]


def scorer_config() -> TwhinModelConfig:
    sgd = {"sgd": {"lr": 0.1}}
    table = {"name": "entity", "num_embeddings": 1000, "embedding_dim": DIM, "optimizer": sgd}
    relations = [
        {"name": f"rel{r}", "lhs": "entity", "rhs": "entity", "operator": "translation"}
        for r in range(RELATIONS)
    ]
    return TwhinModelConfig.model_validate(
        {"embeddings": {"tables": [table]}, "relations": relations,
         "translation_optimizer": sgd, "comparator": "dot", "loss": "softmax"}
    )  # fmt: skip


def make_batch(size: int) -> tuple[torch.Tensor, SimpleNamespace]:
    """Looked-up rows for one batch of `size` positives, laid out by the batch contract; what
    the scorer reads of an `EdgeBatch` besides the lookups (no TorchRec needed)."""
    counts = [int(size * share) for share in MIX]
    counts[0] += size - sum(counts)
    layout = SlotLayout(scorer_config().graph_shape(), size, UNIFORM, IN_BATCH,
                        global_negatives_per_chunk=True)  # fmt: skip
    order, per_relation = layout.row_order(np.repeat(np.arange(RELATIONS), counts))
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(layout.num_slots, DIM, generator=generator) * DIM**-0.5
    relation = torch.from_numpy(np.repeat(np.arange(RELATIONS), counts)[order])
    batch = SimpleNamespace(relation=relation, weight=torch.ones(size),
                            pieces=layout.pieces(per_relation), layout=layout)  # fmt: skip
    return values, batch


def run(device: torch.device, size: int, steps: int) -> dict:
    torch.manual_seed(0)
    scorer = EdgeScorer(scorer_config()).to(device)
    values, batch = make_batch(size)
    values = values.to(device).requires_grad_()
    batch.relation, batch.weight = batch.relation.to(device), batch.weight.to(device)

    def step() -> torch.Tensor:
        values.grad = None
        loss, _ = scorer(LookedUp(values), batch)
        loss.backward()
        return loss

    loss = step()  # warm-up, and the figures compared across devices
    gradient = values.grad.detach().cpu().clone()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # steadier than wall time on a busy CPU
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": size, "edges_per_s": size * steps / seconds,
        "ms_per_step": 1000 * seconds / steps, "cpu_ms_per_step": 1000 * cpu_seconds / steps,
        "loss": loss.item(), "gradient": gradient,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    results = [run(torch.device("cpu"), args.batch, max(2, args.steps // 10))]
    if torch.cuda.is_available():
        results.append(run(torch.device("cuda"), args.batch, args.steps))
        cpu, gpu = results
        scale = cpu["gradient"].abs().max().item()
        difference = (cpu["gradient"] - gpu["gradient"]).abs().max().item() / scale
        print(json.dumps({"loss_cpu": cpu["loss"], "loss_gpu": gpu["loss"],
                          "max_relative_gradient_difference": difference}))  # fmt: skip
        assert abs(cpu["loss"] - gpu["loss"]) < 1e-4 * max(1.0, abs(cpu["loss"])), "loss differs"
        assert difference < 1e-4, "gradients differ between CPU and GPU"
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "gradient"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
