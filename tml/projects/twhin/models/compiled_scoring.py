"""`model.compile`: the scorer's per-group scoring and loss through `torch.compile` (inductor),
eager wherever compiling fails.

The scoring of a chunk group is a chain of small memory-bound ops (the operator, the
transposes, the concatenation of candidates, the `-inf` fill, softmax and the N3 term) around
batched matrix products; inductor fuses the elementwise work, forward and backward.

* What is compiled: `EdgeScorer`'s per-bucket method (SCORING_METHOD), swapped on the instance
  (scorer.py itself is unchanged). Only training calls (gradients on) of buckets of more than one
  chunk go through it; single chunks (such as a relation's last, shorter one) and validation stay
  eager, so there are few graphs (shapes are dynamic: chunk counts and widths change every
  batch), not one per chunk width. The log says when each graph is compiled and how long it took.
* Cache: inductor's on-disk caches (generated kernels, AOTAutograd graphs) go to
  TORCHINDUCTOR_CACHE_DIR, by default `~/.cache/tml-twhin/inductor` (under $XDG_CACHE_HOME when
  set), so later runs on the machine skip code generation and the C++ compiler.
* Fallback: any error while compiling (no C++ compiler, an unsupported op) is one warning, and
  the scorer runs eagerly from then on. The backward is lowered together with the forward, so
  its failures surface in the first call too, where they can be caught.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._functorch.config as functorch_config
from torch._dynamo.utils import counters

from tml.projects.twhin.models.scorer import EdgeScorer

log = logging.getLogger(__name__)

SCORING_METHOD = "_score_bucket"
"""`EdgeScorer`'s per-bucket scoring and loss: (group, relation, lhs, rhs, lhs_negatives,
rhs_negatives) -> ChunkScores, with lhs `(chunks, width, d)`."""

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where inductor's caches go unless TORCHINDUCTOR_CACHE_DIR says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tml-twhin" / "inductor"


def several_chunks(
    group: int, relation: torch.Tensor, lhs: torch.Tensor, rhs: torch.Tensor,
    lhs_negatives: torch.Tensor, rhs_negatives: torch.Tensor,
) -> bool:  # fmt: skip
    """Whether a call of SCORING_METHOD scores a bucket of more than one chunk (compiled) or a
    single chunk, such as a relation's last, shorter one (eager: its width changes from batch to
    batch)."""
    return lhs.shape[0] > 1


def root_cause(exc: BaseException) -> str:
    """The innermost error of a chain (dynamo wraps a backend's error in its own), one line."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


class CompiledCall:
    """Calls `function` compiled by torch.compile where `compiled_when(*args)` says so and
    gradients are on, else eagerly; after a compilation error, always eagerly (warned once)."""

    def __init__(
        self,
        function: Callable[..., Any],
        compiled_when: Callable[..., bool],
        backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        self.eager = function
        self.compiled_when = compiled_when
        self.compiled = torch.compile(function, backend=backend, dynamic=True)
        self.failed = False
        self.graphs = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed or not torch.is_grad_enabled() or not self.compiled_when(*args, **kwargs):
            return self.eager(*args, **kwargs)
        graphs, started = counters["stats"]["unique_graphs"], time.perf_counter()
        try:
            result = self.compiled(*args, **kwargs)
        except Exception as exc:  # any compiler failure: train on, eagerly
            self.failed = True
            log.warning("model.compile: compiling the scorer failed, scoring eagerly (%s)",
                        root_cause(exc))  # fmt: skip
            return self.eager(*args, **kwargs)
        if counters["stats"]["unique_graphs"] > graphs:
            self.graphs += counters["stats"]["unique_graphs"] - graphs
            log.info("model.compile: scorer graph %d compiled in %.1f s (cache: %s)",
                     self.graphs, time.perf_counter() - started, os.environ[CACHE_ENV])  # fmt: skip
        return result


def compile_scoring(scorer: EdgeScorer, backend: str | Callable[..., Any] = "inductor") -> None:
    """Route `scorer`'s per-group scoring through torch.compile (see the module docstring)."""
    os.environ.setdefault(CACHE_ENV, str(default_cache_dir()))
    # Lower the backward with the forward, so a failure there is caught in CompiledCall too.
    functorch_config.force_non_lazy_backward_lowering = True
    method = getattr(scorer, SCORING_METHOD)
    setattr(scorer, SCORING_METHOD, CompiledCall(method, several_chunks, backend))
