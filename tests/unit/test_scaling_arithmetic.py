"""The planned half of docs/scaling.md rests on facts checked here, in process: the workload's
lookups fill the trainer's slot layout, the planner sees the trainer's own topology, our memory
arithmetic agrees with TorchRec's planner, the ranking's cost follows the implementation's passes,
and the page's config example and scorer rate are true. (The page being current, and the pooled
output's shape on real TorchRec: tests/distributed/test_scaling_doc.py.)"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from benchmarks.scaling.assumptions import H100_SCORER_POINTS, Cluster, Workload
from benchmarks.scaling.costs import Placement, output_dist, placement_costs
from benchmarks.scaling.planner import PlanOutcome, plan_that_fits, trainer_topology
from benchmarks.scaling.ranking import passes_per_relation
from tests.conftest import REPO
from tml.projects.twhin.eval.sharded_ranking import edge_groups
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.parallel.planner import make_topology

DOC = REPO / "docs" / "scaling.md"


@pytest.fixture(scope="module")
def eight_gpus() -> PlanOutcome:
    """The 8-GPU plan as the doc makes it (a second of TorchRec's planner)."""
    return plan_that_fits(Workload(), Cluster(), 8)


def test_lookups_fill_exactly_the_slots_of_the_layout() -> None:
    work = Workload()
    assert sum(work.lookups_per_table().values()) == work.slots == 40_000


def test_row_wise_output_traffic_is_every_other_gpus_slots() -> None:
    """Tables row-wise on 16 GPUs (2 hosts): each GPU sends S pooled rows per table to each of
    the other 15, 7 over NVLink and 8 over the network."""
    work = Workload()
    traffic = output_dist(Placement.row_wise_everywhere(work, 16), work, Cluster())
    row_bytes = len(work.tables) * work.slots * work.dim * 4
    assert (traffic.intra, traffic.inter) == (7 * row_bytes, 8 * row_bytes)


def test_eight_gpus_need_uvm_caching_for_the_tweet_table(eight_gpus: PlanOutcome) -> None:
    assert eight_gpus.placement is not None
    cached = {table.table for table in eight_gpus.placement.tables if table.cached}
    assert cached == {"tweet"}  # 512 GB + Adagrad state > 8 x 68 GB with the other tables


def test_our_memory_arithmetic_agrees_with_the_planner(eight_gpus: PlanOutcome) -> None:
    assert eight_gpus.placement is not None
    memory = placement_costs(eight_gpus.placement, Workload(), Cluster()).memory
    assert memory.hbm == pytest.approx(memory.planner_hbm, rel=0.02)
    assert memory.host == pytest.approx(memory.planner_ddr, rel=0.02)
    assert memory.hbm <= Cluster().hbm_bytes * (1 - Cluster().planner_reserve)


def test_the_trainer_topology_is_the_one_make_topology_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doc's "What the trainer plans" stands for the trainer's own Topology on H100s."""
    cluster = Cluster()
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(total_memory=cluster.hbm_bytes))  # fmt: skip
    trainer = make_topology(torch.device("cuda", 0), world_size=64, local_size=8)
    assert vars(trainer_topology(cluster, 64)) == vars(trainer)


def test_ranking_passes_are_the_implementations_groups() -> None:
    """One pass per group of edges of one relation, as sharded_ranking.edge_groups cuts them."""
    work = Workload(eval_queries=200_000)
    relation = np.repeat(np.arange(len(work.relations)),
                         [round(work.eval_queries * r.share) for r in work.relations])  # fmt: skip
    edges = np.stack([np.zeros_like(relation), relation, np.zeros_like(relation)], axis=1)
    groups = edge_groups(edges, len(work.relations))
    counted = np.bincount([group.relation for group in groups], minlength=len(work.relations))
    assert passes_per_relation(work) == counted.tolist()


def test_the_config_example_is_a_valid_model_config() -> None:
    """The YAML in "What to configure" is accepted as is by the trainer's config."""
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/scaling.md lost its config example"
    model = yaml.safe_load(block.group(1))["model"]
    work = Workload()
    model["relations"] = [{"name": r.name, "lhs": r.lhs, "rhs": r.rhs} for r in work.relations]
    model["translation_optimizer"] = {"adagrad": {"lr": 0.1}}
    config = TwhinModelConfig.model_validate(model)
    assert any(t.compute_kernel.value == "fused_uvm_caching" for t in config.embeddings.tables)


def test_the_scorer_rate_is_the_one_measured_on_the_page() -> None:
    measured = " ".join(DOC.read_text().split("<!-- scaling-plan:start -->")[0].split())
    (small, small_rate), (large, large_rate) = H100_SCORER_POINTS
    stated = (
        f"{small_rate / 1e6:.0f} M positive edges/s at {small:,} positives per step and "
        f"{large_rate / 1e6:.0f} M/s at {large:,}"
    )
    assert stated in measured
