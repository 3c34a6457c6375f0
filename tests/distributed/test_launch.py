"""Docker-first launch, verified without a Docker engine.

entrypoint.sh runs for real on this host (TML_APP_DIR = the checkout, .venv first on PATH):
CPU training, export, two "nodes" meeting in a c10d rendezvous, and its input errors. The
Slurm script runs as two nodes with stand-ins for srun. The image, compose and Kubernetes
files are checked in test_image.py and test_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, small_config, torchrun_env, write_config
from tml.core.checkpoint import complete_checkpoints

ENTRYPOINT = REPO / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def entrypoint_vars() -> set[str]:
    """Environment variables entrypoint.sh reads (every `${NAME` in its code)."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))


def entrypoint_env(**overrides: str) -> dict[str, str]:
    env = torchrun_env()
    for name in entrypoint_vars() - {"PATH", "PYTHONPATH", "OMP_WAIT_POLICY"}:
        env.pop(name, None)  # nothing from the caller's shell may steer the launch
    env.update(TML_APP_DIR=str(REPO), PATH=f"{VENV_BIN}:{env['PATH']}")
    env.update(overrides)
    return env


def run_entrypoint(
    *args: str, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=timeout,
        env=entrypoint_env(**env), cwd=REPO,
    )  # fmt: skip


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def short_run_config(graph: Path, path: Path, steps: int) -> Path:
    """A few steps of the test-sized local.yaml, one checkpoint at the end."""
    config = small_config(graph, num_train_steps=steps, checkpoint_every_n=1000, num_eval_steps=2)
    return write_config(path, config)


# --- the entrypoint on the host ---------------------------------------------------------------


@pytest.fixture(scope="module")
def host_run(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`entrypoint.sh` with no argument and no NPROC_PER_NODE: train on this CPU box."""
    tmp = tmp_path_factory.mktemp("host_run")
    config = short_run_config(small_graph, tmp / "config.yaml", steps=20)
    result = run_entrypoint(CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp / "save"))
    assert_ok(result)
    # No GPU here, so the default is one process, launched standalone.
    launch = "python -m tml.core.launch --nnodes 1 --nproc_per_node 1 --max_restarts 3 --standalone"
    assert f"entrypoint: {launch}" in result.stderr
    return config, tmp / "save"


def test_entrypoint_trains_on_the_host(host_run: tuple[Path, Path]) -> None:
    _, save_dir = host_run
    assert [p.name for p in complete_checkpoints(save_dir / "checkpoints")] == ["step_20"]
    assert (save_dir / "embeddings" / "user.parquet").is_file()
    assert (save_dir / "metrics.jsonl").read_text().strip()


def test_entrypoint_export_job(host_run: tuple[Path, Path]) -> None:
    _, save_dir = host_run
    for parquet in (save_dir / "embeddings").glob("*.parquet"):
        parquet.unlink()
    result = run_entrypoint("export", SAVE_DIR=str(save_dir))
    assert_ok(result)
    assert "entrypoint: python -m tml.projects.twhin.export --save_dir" in result.stderr
    output = result.stdout + result.stderr
    assert "exported user, tweet" in output and "(parquet) from " in output, "INFO lines shown"
    names = {p.name for p in (save_dir / "embeddings").glob("*.parquet")}
    assert {"user.parquet", "tweet.parquet", "relations.parquet"} <= names


def test_entrypoint_evaluate_job(host_run: tuple[Path, Path]) -> None:
    config, save_dir = host_run
    if not (REPO / "tml" / "projects" / "twhin" / "evaluate.py").is_file():
        pytest.skip("tml.projects.twhin.evaluate is not written yet")
    result = run_entrypoint("evaluate", CONFIG_YAML_PATH=str(config), SAVE_DIR=str(save_dir))
    assert_ok(result)


def test_other_commands_run_as_is_with_the_environment_set() -> None:
    code = "import os, sys; print(os.environ['OMP_WAIT_POLICY'], sys.argv[1:])"
    result = run_entrypoint("python", "-c", code, "a b", "c")
    assert_ok(result)
    assert result.stdout.strip() == "PASSIVE ['a b', 'c']"


def test_missing_config_says_how_to_mount_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for job in ("train", "evaluate"):
        result = run_entrypoint(job, CONFIG_YAML_PATH=str(missing), SAVE_DIR=str(tmp_path))
        assert result.returncode == 2
        error = result.stderr.strip()
        assert error.startswith(f"error: config file {missing} not found")
        assert "/config:ro" in error and "CONFIG_YAML_PATH" in error


@pytest.mark.parametrize("job", ["train", "export"])
def test_unwritable_save_dir_is_refused_before_launch(tmp_path: Path, job: str) -> None:
    # Root may write anywhere, but not below a regular file.
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(tmp_path / "config.yaml", {})
    result = run_entrypoint(job, CONFIG_YAML_PATH=str(config), SAVE_DIR=str(blocker / "save"))
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.startswith(
        f"error: save dir {blocker / 'save'} cannot be created (Not a directory)"
    )
    assert "SAVE_DIR" in error and "writable" in error
    assert "entrypoint:" not in result.stderr  # nothing was launched


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NNODES": "2"}, "NNODES=2 needs the first node's address"),
        ({"NNODES": "two"}, "NNODES=two is not a positive integer"),
        ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE=0 is not a positive integer"),
        ({"GRACE_PERIOD_S": "soon"}, "GRACE_PERIOD_S=soon is not a positive integer"),
    ],
)
def test_bad_launch_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    config = write_config(tmp_path / "config.yaml", {})
    result = run_entrypoint(CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "s"), **env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {message}")


def run_nodes(nodes: list[dict[str, str]], log_dir: Path) -> list[Path]:
    """Start one entrypoint per node environment at once; wait for all to exit 0; their logs."""
    logs = [log_dir / f"node{i}.log" for i in range(len(nodes))]
    processes = []
    for env, log in zip(nodes, logs, strict=True):
        with open(log, "w") as out:
            start = dict(stdout=out, stderr=subprocess.STDOUT, env=entrypoint_env(**env), cwd=REPO)
            processes.append(subprocess.Popen([str(ENTRYPOINT)], **start))
    try:
        codes = [p.wait(timeout=240) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert codes == [0] * len(nodes), "\n".join(log.read_text()[-3000:] for log in logs)
    return logs


def test_two_nodes_on_one_machine_train_together(small_graph: Path, tmp_path: Path) -> None:
    """Two entrypoints, one process each, meet in a c10d rendezvous on 127.0.0.1 and write one
    checkpoint. Node 0 is given RDZV_ENDPOINT, node 1 MASTER_ADDR/MASTER_PORT (as Kubeflow)."""
    config = short_run_config(small_graph, tmp_path / "config.yaml", steps=10)
    port = str(free_port())
    common = dict(
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "save"), NNODES="2",
        NPROC_PER_NODE="1", RDZV_ID="two-nodes",
    )  # fmt: skip
    nodes = [
        dict(common, NODE_RANK="0", RDZV_ENDPOINT=f"127.0.0.1:{port}"),
        dict(common, NODE_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
    ]
    logs = run_nodes(nodes, tmp_path)
    assert "--rdzv_backend c10d" in logs[0].read_text()
    checkpoints = complete_checkpoints(tmp_path / "save" / "checkpoints")
    assert [p.name for p in checkpoints] == ["step_10"]
    # One checkpoint holding a shard from each node's rank.
    assert sorted(p.name for p in checkpoints[0].glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    state = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    assert state["world_size"] == 2


# --- Slurm ---------------------------------------------------------------------------------------


# Stand-ins for the scheduler, so train.sbatch itself runs: `srun` starts its command once per
# node of the allocation, all on this machine, each with its SLURM_NODEID.
FAKE_SRUN = """#!/bin/bash
while [[ $1 == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_JOB_NUM_NODES; node++)); do SLURM_NODEID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
FAKE_SCONTROL = "#!/bin/bash\necho 127.0.0.1\n"


def test_slurm_script_runs_two_nodes(small_graph: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        write_text(bin_dir / name, text).chmod(0o755)
    config = short_run_config(small_graph, tmp_path / "config.yaml", steps=10)
    env = entrypoint_env(
        PATH=f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(REPO),
        SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="tml-twhin", RDZV_PORT=str(free_port()), NPROC_PER_NODE="1",
        CONFIG_YAML_PATH=str(config), SAVE_DIR=str(tmp_path / "save"),
    )  # fmt: skip
    result = subprocess.run(
        ["bash", str(REPO / "deploy" / "slurm" / "train.sbatch")],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    assert "--rdzv_endpoint 127.0.0.1:" in result.stderr and "--rdzv_id 4242" in result.stderr
    assert result.stderr.count("--rdzv_conf is_host=1") == 1  # node 0 only
    (checkpoint,) = complete_checkpoints(tmp_path / "save" / "checkpoints")
    assert json.loads((checkpoint / "trainer_state.json").read_text())["world_size"] == 2


def test_slurm_script_parses_and_matches_the_entrypoint() -> None:
    sbatch = REPO / "deploy" / "slurm" / "train.sbatch"
    subprocess.run(["bash", "-n", str(sbatch)], check=True)
    subprocess.run([str(VENV_BIN / "shellcheck"), str(sbatch)], check=True)
    text = sbatch.read_text()
    assert "#SBATCH --ntasks-per-node=1" in text
    exported = set(re.findall(r"^export ([A-Z_]+)=", text, flags=re.MULTILINE))
    # Read by srun, by the shell, and by enroot's NVIDIA hook (pyxis), not by the entrypoint.
    slurm_only = {"SRUN_CPUS_PER_TASK", "PATH", "NVIDIA_VISIBLE_DEVICES"}
    assert {"NNODES", "RDZV_ENDPOINT", "RDZV_ID", "CONFIG_YAML_PATH", "SAVE_DIR"} <= exported
    assert exported - slurm_only <= entrypoint_vars()
    assert 'NODE_RANK=$SLURM_NODEID exec "$0" train' in text
