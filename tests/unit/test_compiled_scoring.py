"""`model.compile`: the compiled scorer trains the same loss and gradients as the eager one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tml.projects.twhin.batch.layout import GraphShape, SlotLayout
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.builder import EdgeBatchBuilder
from tml.projects.twhin.models import compiled_scoring
from tml.projects.twhin.models.compiled_scoring import CompiledCall
from tml.projects.twhin.models.model import TwhinModel

# In `make test-tools` (CI runs it after `make test`), not `make test`: see docs/development.md.
pytestmark = pytest.mark.tools


CONFIG = {
    "model": {
        "translation_optimizer": {"sgd": {"lr": 0.1}},
        "embeddings": {"tables": [{"name": "user", "num_embeddings": 40, "embedding_dim": 8,
                                   "optimizer": {"sgd": {"lr": 0.1}}}]},
        "relations": [{"name": "follows", "lhs": "user", "rhs": "user"}],
        "loss": "softmax",
        "regularization": 0.01,
    },
    "train_data": {"data_root": "unused", "per_replica_batch_size": 12,
                   "global_negatives": 3, "in_batch_negatives": 2},
}  # fmt: skip


@pytest.fixture(autouse=True)
def inductor_cache(
    pytestconfig: pytest.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest's cache folder, not the user's: the first run compiles (about 30 s of CPU), later
    runs of the suite in the same checkout reuse the kernels."""
    cache = getattr(pytestconfig, "cache", None)  # None with -p no:cacheprovider
    folder = cache.mkdir("inductor") if cache is not None else tmp_path / "inductor"
    monkeypatch.setenv(compiled_scoring.CACHE_ENV, str(folder))


def models(compile_scorer: bool) -> tuple[TwhinModel, TwhinModel]:
    """An eager model and a copy of its weights, compiled or not."""
    raw = {**CONFIG, "model": {**CONFIG["model"], "compile": compile_scorer}}
    config = TwhinConfig.model_validate(raw).model
    eager = TwhinModel(config.model_copy(update={"compile": False}), torch.device("cpu"))
    torch.manual_seed(0)
    torch.nn.init.normal_(eager.tables.embedding_bags["user"].weight, std=0.5)
    with torch.no_grad():
        for value in eager.scorer.relation_parameters(0).values():
            value.copy_(torch.randn(value.shape) * 0.3)
    other = TwhinModel(config, torch.device("cpu"))
    other.load_state_dict(eager.state_dict())
    return eager, other


def batches(sizes: tuple[int, ...]) -> list:
    """Batches of `sizes` positives: chunks of 3, so 12 and 9 positives are 4 and 3 chunks."""
    layout = SlotLayout(GraphShape(("user",), (40,), ((0, 0),)), batch_size=12, global_negatives=3,
                        in_batch_negatives=2, global_negatives_per_chunk=True)  # fmt: skip
    builder = EdgeBatchBuilder(layout)
    rng = np.random.default_rng(1)
    made = []
    for size in sizes:
        lhs, rhs = rng.integers(0, 40, size), rng.integers(0, 40, size)
        made.append(builder.build(lhs, np.zeros(size, dtype=np.int64), rhs, rng))
    return made


def loss_and_gradients(model: TwhinModel, batch: object) -> tuple[torch.Tensor, list]:
    model.zero_grad()
    loss, _ = model(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_compiled_loss_and_gradients_equal_eager_with_one_graph_for_any_chunk_count() -> None:
    eager, compiled = models(compile_scorer=True)
    call = getattr(compiled.scorer, compiled_scoring.SCORING_METHOD)
    assert isinstance(call, CompiledCall)
    for batch in batches((12, 10, 9)):  # 4 chunks; 3 chunks + a last one of 1; 3 chunks
        expected_loss, expected_grads = loss_and_gradients(eager, batch)
        loss, grads = loss_and_gradients(compiled, batch)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
        for got, expected in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not call.failed
    assert call.graphs == 1, "the chunk count is dynamic: one graph for every batch"


def test_a_compiler_failure_is_one_warning_and_training_goes_on_eagerly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_backend(graph: torch.fx.GraphModule, inputs: list) -> object:
        raise RuntimeError("no C++ compiler")

    eager, compiled = models(compile_scorer=False)
    compiled_scoring.compile_scoring(compiled.scorer, backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger=compiled_scoring.__name__):
        for batch in batches((12, 9)):
            expected_loss, expected_grads = loss_and_gradients(eager, batch)
            loss, grads = loss_and_gradients(compiled, batch)
            torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
            for got, expected in zip(grads, expected_grads, strict=True):
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
    warnings = [r.getMessage() for r in caplog.records if r.name == compiled_scoring.__name__]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0], warnings
    assert getattr(compiled.scorer, compiled_scoring.SCORING_METHOD).failed
