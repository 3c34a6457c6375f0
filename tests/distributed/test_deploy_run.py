"""The entrypoint as Kubeflow starts it: two "nodes" configured only by the PET_* variables,
PET_* as defaults, and every command run as a job by name."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.distributed.test_launch import (
    VENV_BIN,
    assert_ok,
    free_port,
    run_entrypoint,
    run_nodes,
    short_run_config,
    write_text,
)
from tml.core.checkpoint import complete_checkpoints

# In `make test-tools` (CI runs it after `make test`), not `make test`: see docs/development.md.
pytestmark = pytest.mark.tools


# --- two nodes configured only by Kubeflow's variables -------------------------------------------


def test_two_nodes_configured_only_by_pet_variables_train_into_one_checkpoint(
    small_graph: Path, tmp_path: Path
) -> None:
    """What the Trainer v2 puts in each pod (PET_* only, no MASTER_ADDR), on one machine."""
    config = short_run_config(small_graph, tmp_path / "config.yaml", steps=10)
    port = str(free_port())
    common = dict(
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "save"), PET_NNODES="2",
        PET_NPROC_PER_NODE="1", PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=port,
    )  # fmt: skip
    nodes = [dict(common, PET_NODE_RANK=str(rank)) for rank in range(2)]
    logs = run_nodes(nodes, tmp_path)
    for rank, log in enumerate(logs):
        launch = next(line for line in log.read_text().splitlines() if "entrypoint:" in line)
        assert "--nnodes 2 --nproc_per_node 1" in launch
        assert f"--rdzv_endpoint 127.0.0.1:{port}" in launch
        assert f"--rdzv_conf is_host={int(rank == 0)}" in launch
    (checkpoint,) = complete_checkpoints(tmp_path / "save" / "checkpoints")
    assert checkpoint.name == "step_10"
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["world_size"] == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PET_NPROC_PER_NODE": "auto"}, "--nnodes 1 --nproc_per_node 1 "),  # no GPU here
        ({"PET_NNODES": "1", "PET_NPROC_PER_NODE": "2"}, "--nnodes 1 --nproc_per_node 2 "),
        ({"PET_NNODES": "1", "NNODES": "1", "PET_NPROC_PER_NODE": "2", "NPROC_PER_NODE": "1"},
         "--nnodes 1 --nproc_per_node 1 "),  # our names win
    ],
)  # fmt: skip
def test_pet_variables_are_defaults(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    command = "import sys; print(' '.join(sys.argv[1:]))"
    config = write_text(tmp_path / "config.yaml", "{}\n")
    # `train` with python swapped for a stand-in that prints the launch line instead.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = f'#!/bin/sh\nif [ "$2" = tml.core.launch ]; then exec {sys.executable} -c "{command}" "$@"; fi\n'
    stand_in += f'exec {sys.executable} "$@"\n'
    write_text(bin_dir / "python", stand_in).chmod(0o755)
    path = f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}"
    result = run_entrypoint(
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "s"), PATH=path, **env
    )
    assert_ok(result)
    assert expected in result.stdout


def test_an_elastic_node_range_is_refused(tmp_path: Path) -> None:
    config = write_text(tmp_path / "config.yaml", "{}\n")
    result = run_entrypoint(CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path), PET_NNODES="1:4")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: NNODES=1:4 is an elastic range (a PyTorchJob elasticPolicy): set a fixed number "
        "of nodes"
    )


# --- every command as a job ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's trained run (with its export), for jobs that write into it."""
    copy = tmp_path_factory.mktemp("jobs") / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_neighbors_job(exported_run: Path) -> None:
    result = run_entrypoint(
        "neighbors", "--table", "user", "--query", "7", "-k", "3", "--json",
        SAVE_DIR=str(exported_run),
    )  # fmt: skip
    assert_ok(result)
    assert f"entrypoint: python -m tml.projects.twhin.neighbors --save_dir {exported_run}" in (
        result.stderr
    )
    found = json.loads(result.stdout)
    assert found["table"] == "user"
    (entry,) = found["results"]
    assert entry["query"]["id"] == 7 and len(entry["neighbors"]) == 3


def test_report_job(exported_run: Path) -> None:
    result = run_entrypoint("report", SAVE_DIR=str(exported_run), timeout=300)
    assert_ok(result)
    assert (exported_run / "report" / "index.html").is_file()


def test_import_kg_job(tmp_path: Path) -> None:
    kinships = REPO / "datasets" / "kinships"
    result = run_entrypoint(
        "import_kg", "--train", str(kinships / "train.tsv"), "--out", str(tmp_path / "kg")
    )
    assert_ok(result)
    assert (tmp_path / "kg" / "config.yaml").is_file()


def test_neighbors_needs_the_run(tmp_path: Path) -> None:
    result = run_entrypoint(
        "neighbors", "--table", "user", "--query", "1", SAVE_DIR=str(tmp_path / "x")
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: save dir {tmp_path / 'x'} not found")


def test_tune_job_says_when_the_build_has_no_tuner(tmp_path: Path) -> None:
    if importlib.util.find_spec("tml.projects.twhin.tune") is not None:
        pytest.skip("this build has the tuner: its own tests run it")
    result = run_entrypoint("tune", CONFIG_YAML_PATH=str(tmp_path), SAVE_DIR=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: job tune needs tml.projects.twhin.tune, which this build of tml-twhin does not have"
    )
