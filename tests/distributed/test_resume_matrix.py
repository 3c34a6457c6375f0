"""Every configuration resumes bit-exactly from a checkpoint, or refuses before training.

The cells are tests/resume_cells.py's. Each runs as a round trip inside a real torchrun worker
(tests/workers/resume_matrix.py) rather than as a job of its own: a reference run writes a
checkpoint at step 4 and goes on to step 8; the resume restores that checkpoint under the cell's
other plan and world size, saves what it restored, and trains to step 8. Three torchrun jobs run
all cells: 2 ranks (their references, 2->2), 1 rank (references, 1->1, 2->1), 2 ranks (1->2).

`make test` runs the cells marked fast; `make test-resume` (TML_RESUME_MATRIX=all) runs them all.
How a checkpoint comes to be (the end of a run, SIGTERM, SIGKILL and a restart) is covered with
whole jobs in tests/distributed/test_fault_tolerance.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import REPO, assert_ok, small_config, torchrun_env
from tests.resume_cells import (
    EMBEDDING_DIM,
    OPTIMIZERS,
    STEPS_AFTER,
    STEPS_BEFORE,
    Cell,
    Run,
    cells,
    expected,
    refusal_pattern,
)
from tml.core import safe_dcp
from tml.core.checkpoint import read_trainer_state

WORKER = REPO / "tests" / "workers" / "resume_matrix.py"
ALL = os.environ.get("TML_RESUME_MATRIX") == "all"
CELLS = [cell for cell in cells() if ALL or cell.fast]


def run_config(run: Run, graph: Path, save_dir: Path) -> dict[str, Any]:
    """The test-sized local.yaml trained as `run` says, for 8 steps with a checkpoint at 4."""
    config = small_config(
        graph, num_train_steps=STEPS_BEFORE + STEPS_AFTER, checkpoint_every_n=STEPS_BEFORE,
        num_eval_steps=0, save_dir=str(save_dir),
    )  # fmt: skip
    for table, algorithm in zip(
        config["model"]["embeddings"]["tables"], OPTIMIZERS[run.optimizer], strict=True
    ):
        table.update(embedding_dim=EMBEDDING_DIM, optimizer={algorithm: {"lr": 0.05}})
        table.pop("sharding_type", None)
        if run.sharding != "planner":
            table["sharding_type"] = run.sharding
        if run.extra == "fp16":
            table["data_type"] = "fp16"
    if run.extra == "reciprocal":
        config["model"]["reciprocal_relations"] = True
    if run.extra == "validation":
        config["training"].update(eval_log_every_n=2, num_eval_steps=2)
    return config


def reference_dir(root: Path, run: Run) -> Path:
    return root / "reference" / run.name


def resume_dir(root: Path, cell: Cell) -> Path:
    return root / "resume" / cell.name


# The torchrun jobs, in order: (name, ranks, world size of the references it writes (or None),
# world sizes of the checkpoints it resumes). 2->2 first, then 1->1 and 2->1 (which need the
# 2-rank references), then 1->2.
PHASES = [("ws2", 2, 2, {2}), ("ws1", 1, 1, {1, 2}), ("ws2-late", 2, None, {1})]


def tasks_for(
    ranks: int, references: int | None, resumes: set[int], root: Path, graph: Path
) -> list[dict[str, Any]]:
    """The worker's tasks of one torchrun job: references first, then resumes."""
    tasks = []
    for run in sorted({cell.saved for cell in CELLS if cell.saved.world_size == references},
                      key=lambda run: run.name):  # fmt: skip
        tasks.append({"id": f"reference/{run.name}", "kind": "reference",
                      "config": run_config(run, graph, reference_dir(root, run))})  # fmt: skip
    for cell in CELLS:
        if cell.resumed.world_size == ranks and cell.saved.world_size in resumes:
            tasks.append({
                "id": f"resume/{cell.name}", "kind": "resume",
                "from": str(reference_dir(root, cell.saved)),
                "config": run_config(cell.resumed, graph, resume_dir(root, cell)),
            })  # fmt: skip
    return tasks


def run_worker(nproc: int, tasks: list[dict[str, Any]], root: Path, name: str) -> dict[str, Any]:
    job = root / f"{name}.json"
    results = root / f"{name}.results.json"
    job.write_text(json.dumps({"tasks": tasks, "results": str(results), "step": STEPS_BEFORE}))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
         "--nproc_per_node", str(nproc), str(WORKER), "--job", str(job)],
        capture_output=True, text=True, timeout=3000, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip
    assert_ok(result)
    return json.loads(results.read_text())


@pytest.fixture(scope="module")
def outcomes(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every task's outcome, by task id, from the PHASES' torchrun jobs."""
    root = tmp_path_factory.mktemp("resume_matrix")
    found: dict[str, Any] = {}
    for name, ranks, references, resumes in PHASES:
        tasks = tasks_for(ranks, references, resumes, root, small_graph)
        if tasks:
            found.update(run_worker(ranks, tasks, root, name))
    found["root"] = str(root)
    return found


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, whole (loaded offline, whatever wrote it)."""
    metadata = safe_dcp.read_metadata(path)
    tensors = {
        key: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in metadata.state_dict_metadata.items()
        if hasattr(entry, "size")
    }
    safe_dcp.load(tensors, path, no_dist=True)
    return tensors


def assert_equal_where_shared(
    found: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], keys: Iterable[str]
) -> None:
    for key in keys:
        assert torch.equal(found[key], wanted[key]), key


@pytest.mark.parametrize("cell", CELLS, ids=[cell.name for cell in CELLS])
def test_resume(cell: Cell, outcomes: dict[str, Any]) -> None:
    root = Path(outcomes["root"])
    outcome = outcomes[f"resume/{cell.name}"]
    want = expected(cell)
    saved = checkpoint_tensors(
        reference_dir(root, cell.saved) / "checkpoints" / f"step_{STEPS_BEFORE}"
    )
    restored = checkpoint_tensors(resume_dir(root, cell) / "reloaded" / f"step_{STEPS_BEFORE}")
    if want.refused_tables:
        message = outcome["refused"]
        assert message, f"resumed, but must refuse (plan {outcome['plan']})"
        found = refusal_pattern().fullmatch(message)
        assert found, message
        named = ", ".join(f"'{table}' (rowwise_adagrad)" for table in sorted(want.refused_tables))
        assert found.group(1) == f"table{'s' if len(want.refused_tables) > 1 else ''} {named}"
        shared = [key for key in saved if key.startswith("model.")]  # resume_optimizer: false
    else:
        assert outcome["refused"] is None, outcome["refused"]
        assert saved.keys() == restored.keys()
        shared = list(saved)
    # What the resumed run holds is what was saved, bit for bit.
    assert_equal_where_shared(restored, saved, shared)
    final = STEPS_BEFORE + STEPS_AFTER
    resumed_end = checkpoint_tensors(resume_dir(root, cell) / "checkpoints" / f"step_{final}")
    # The data position moves by edges consumed: 4 steps on 2 ranks are 8 on 1.
    position = read_trainer_state(resume_dir(root, cell) / "checkpoints" / f"step_{final}")
    edges_before = STEPS_BEFORE * cell.saved.world_size  # in batches of one rank
    assert (position["world_size"], position["epoch"], position["step_in_epoch"]) == (
        cell.resumed.world_size, 0, edges_before // cell.resumed.world_size + STEPS_AFTER
    )  # fmt: skip
    if want.exact:
        uninterrupted = checkpoint_tensors(
            reference_dir(root, cell.saved) / "checkpoints" / f"step_{final}"
        )
        assert_equal_where_shared(resumed_end, uninterrupted, uninterrupted)
    else:  # another world size or plan: trained on from the checkpoint
        weights = "model.tables.embedding_bags.user.weight"
        assert torch.isfinite(resumed_end[weights].float()).all()
        assert not torch.equal(resumed_end[weights], restored[weights])
