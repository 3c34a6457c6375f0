"""Checkpoints written before relation parameters were stacked (tests/assets/legacy_run, one
tensor per relation) still export, search and load into the stacks, optimizer state included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from tests.conftest import REPO
from tml.core import safe_dcp
from tml.core.checkpoint import saved_shapes
from tml.core.config import load_config
from tml.projects.twhin.artifacts.checkpoints import per_relation_view
from tml.projects.twhin.artifacts.embedding_files import RELATIONS_FILE
from tml.projects.twhin.artifacts.export import export
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.model import TwhinModel
from tml.projects.twhin.search.neighbors import find_neighbors
from tml.projects.twhin.training.resume import check_fits

LEGACY = REPO / "tests" / "assets" / "legacy_run"
CHECKPOINT = LEGACY / "run" / "checkpoints" / "step_6"
RELATIONS = 4


def legacy_run(tmp_path: Path) -> Path:
    """A copy of the legacy run dir, its data root made absolute, its export moved aside."""
    shutil.copytree(LEGACY, tmp_path / "legacy")
    run = tmp_path / "legacy" / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train_data"]["data_root"] = str(tmp_path / "legacy" / "data" / "train")
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "embeddings").rename(tmp_path / "exported_then")
    return run


def saved(keys: list[str]) -> dict[str, torch.Tensor]:
    """Tensors of the legacy checkpoint under their own (per-relation) keys."""
    metadata = safe_dcp.read_metadata(CHECKPOINT).state_dict_metadata
    out = {key: torch.empty(tuple(metadata[key].size)) for key in keys}
    safe_dcp.load(out, CHECKPOINT, no_dist=True)
    return out


def relation_rows(path: Path) -> dict[str, dict]:
    return {row["name"]: row for row in pq.read_table(path).to_pylist()}


def test_export_writes_what_the_version_that_wrote_the_checkpoint_exported(tmp_path: Path) -> None:
    run = legacy_run(tmp_path)
    export(run)
    now, then = (
        relation_rows(run / "embeddings" / RELATIONS_FILE),
        relation_rows(tmp_path / "exported_then" / RELATIONS_FILE),
    )
    assert list(now) == ["r0", "r1", "r2", "r3"]
    for name, row in then.items():
        assert json.loads(now[name]["parameters"]) == json.loads(row["parameters"]), name
        assert {k: v for k, v in now[name].items() if k != "parameters"} == {
            k: v for k, v in row.items() if k != "parameters"
        }
    for table in ("entity", "user"):
        assert pq.read_table(run / "embeddings" / f"{table}.parquet").equals(
            pq.read_table(tmp_path / "exported_then" / f"{table}.parquet")
        )


def test_relation_neighbours_use_the_old_checkpoints_operator(tmp_path: Path) -> None:
    run = legacy_run(tmp_path)
    export(run)
    result = find_neighbors(run, "entity", ["7"], relation="r3", k=5, index="exact")
    # Brute force with the parameters the old version exported: complex product, then dot.
    parameters = json.loads(
        relation_rows(tmp_path / "exported_then" / RELATIONS_FILE)["r3"]["parameters"]
    )
    table = torch.tensor(
        pq.read_table(tmp_path / "exported_then" / "entity.parquet").column("embedding").to_pylist()
    )
    head = torch.complex(table[7, :4], table[7, 4:]) * torch.complex(
        torch.tensor(parameters["real"]), torch.tensor(parameters["imaginary"])
    )
    scores = table @ torch.cat([head.real, head.imag])
    scores[7] = float("-inf")  # the query itself is no neighbour
    best = scores.topk(5)
    neighbours = result["results"][0]["neighbors"]
    assert [n["id"] for n in neighbours] == best.indices.tolist()
    torch.testing.assert_close(torch.tensor([n["score"] for n in neighbours]), best.values)


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_parameters_and_optimizer_state_load_into_the_stacks(with_optimizer: bool) -> None:
    config = load_config(TwhinConfig, LEGACY / "run" / "config.yaml")
    model = TwhinModel(config.model, table_device=torch.device("cpu"))
    scorer = model.scorer
    # stacks: complex (entity, entity) = r0, r3; translation = r1; complex (user, entity) = r2
    assert scorer.relation_groups == (0, 1, 2, 0)
    parameters = {f"scorer.{k}": v for k, v in scorer.named_parameters()}
    adagrad = KeyedOptimizerWrapper(parameters, lambda p: torch.optim.Adagrad(p, lr=0.1))
    state = {"model": model.state_dict()}
    if with_optimizer:
        state["optim"] = CombinedOptimizer([("relations", adagrad)]).state_dict()
    request, finish = per_relation_view(config.model, state, saved_shapes(CHECKPOINT))
    check_fits(CHECKPOINT, request, config)  # every requested tensor is saved, with its shape
    safe_dcp.load(request, CHECKPOINT, no_dist=True)
    finish()

    names = ["real", "imaginary", "translation"]
    for single, stacked in (("operators", "operator_groups"),
                            ("reverse_operators", "reverse_operator_groups")):  # fmt: skip
        for relation in range(RELATIONS):
            group, row = scorer.relation_groups[relation], scorer.place[relation]
            for name in names:
                key = f"{stacked}.{group}.{name}"
                if f"scorer.{key}" not in parameters:
                    continue
                old = f"scorer.{single}.{relation}.{name}"
                values = saved([f"model.{old}"])
                torch.testing.assert_close(state["model"][f"scorer.{key}"][row],
                                           values[f"model.{old}"], rtol=0, atol=0)  # fmt: skip
                if not with_optimizer:
                    continue
                optimizer = state["optim"]["state"][f"relations.scorer.{key}"]
                old_sum = saved([f"optim.state.relations.{old}.sum"])
                torch.testing.assert_close(
                    optimizer["sum"][row], old_sum[f"optim.state.relations.{old}.sum"]
                )
                # One step counter per stack: the largest of its relations' counters.
                steps = saved([f"optim.state.relations.scorer.{single}.{r}.{name}.step"
                               for r in scorer.members[group]])  # fmt: skip
                assert optimizer["step"] == max(steps.values())
    assert scorer.relation_parameters(1)["translation"].abs().sum() > 0, "r1 was trained"
