"""The planner plans for the GPU's real memory and the real number of lookups per step.

TorchRec plans on CPU for a CUDA topology (no GPU needed); only the device's size is faked here,
as `torch.cuda` cannot answer on a machine without one.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchrec.distributed.planner.types import PlannerError

from tml.projects.twhin.batch.layout import GraphShape, SlotLayout
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.parallel.optimizers import apply_fused_optimizers
from tml.projects.twhin.parallel.planner import make_planner, make_sharder, make_topology

MIB = 1 << 20
# configs/bench.yaml's batches: 10,000 edges, 50 + 50 negatives per chunk, 4 relations.
BENCH_GRAPH = GraphShape(("entity",), (1_000_000,), ((0, 0),) * 4)
BENCH_LOOKUPS = SlotLayout(BENCH_GRAPH, batch_size=10_000, global_negatives=50,
                           in_batch_negatives=50, global_negatives_per_chunk=True).num_slots  # fmt: skip


def one_table_model() -> tuple[TwhinModel, TwhinConfig]:
    """A 1M x 64 fp32 row_wise table (256 MiB, 128 MiB per rank on 2 GPUs), on the meta device."""
    config = TwhinConfig.model_validate({
        "model": {"translation_optimizer": {"sgd": {"lr": 0.1}},
                  "embeddings": {"tables": [{"name": "user", "num_embeddings": 1_000_000,
                                             "embedding_dim": 64, "sharding_type": "row_wise",
                                             "optimizer": {"sgd": {"lr": 0.1}}}]},
                  "relations": [{"name": "follows", "lhs": "user", "rhs": "user"}]},
        "train_data": {"data_root": "unused", "per_replica_batch_size": 8,
                       "global_negatives": 1, "in_batch_negatives": 0},
    })  # fmt: skip
    model = TwhinModel(config.model, table_device=torch.device("meta"))
    apply_fused_optimizers(model, config.model, "cuda")
    return model, config


@pytest.fixture
def gpu_of(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Makes torch.cuda report a GPU of the given size."""

    def set_size(total_memory: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device: SimpleNamespace(total_memory=total_memory))  # fmt: skip

    return set_size


def test_bench_batches_look_up_40000_rows_per_step() -> None:
    assert BENCH_LOOKUPS == 40_000


def test_the_topology_has_the_gpus_real_memory(gpu_of) -> None:  # noqa: ANN001
    gpu_of(80 * 1024 * MIB)  # an H100; TorchRec's default would be 32 GiB
    topology = make_topology(torch.device("cuda", 0), world_size=8, local_size=8)
    assert [device.storage.hbm for device in topology.devices] == [80 * 1024 * MIB] * 8
    cpu = make_topology(torch.device("cpu"), world_size=2, local_size=2)
    assert [device.storage.hbm for device in cpu.devices] == [0, 0]  # tables in host memory


def test_the_planner_counts_the_gpus_memory_and_the_real_lookups(gpu_of) -> None:  # noqa: ANN001
    model, config = one_table_model()

    def plans(lookups: int) -> bool:
        planner = make_planner(config.model, torch.device("cuda", 0), 2, 2, lookups)
        try:
            planner.plan(model, [make_sharder()])
        except PlannerError:
            return False
        return True

    gpu_of(64 * MIB)  # smaller than a rank's half of the table: no plan
    assert not plans(512)
    gpu_of(1024 * MIB)
    assert plans(512) and plans(BENCH_LOOKUPS)
    # 160 MiB holds a half table with TorchRec's assumed 512 lookups' buffers, but not with the
    # 40,000 rows a bench step really looks up: the estimate uses the real batch.
    gpu_of(160 * MIB)
    assert plans(512)
    assert not plans(BENCH_LOOKUPS)
