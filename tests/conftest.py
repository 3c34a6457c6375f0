"""Shared fixtures: a small synthetic graph, config files, and real torchrun launches."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tml.core.checkpoint import complete_checkpoints
from tml.core.launch import process_children
from tml.projects.twhin.tools import synthetic

REPO = Path(__file__).resolve().parents[1]
RUN_PY = REPO / "tml" / "projects" / "twhin" / "run.py"

# Small enough for seconds per run on 2 CPU cores, large enough to learn communities.
SMALL_GRAPH = dict(
    num_users=2000, num_tweets=3000, num_advertisers=100, num_edges=60_000,
    num_communities=10, rows_per_file=20_000, row_group_size=5_000,
)  # fmt: skip


@pytest.fixture(scope="session")
def small_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic Twitter-like graph at test size (train/, validation/, communities)."""
    out = tmp_path_factory.mktemp("graph") / "synthetic"
    synthetic.generate(str(out), seed=3, **SMALL_GRAPH)
    return out


@pytest.fixture(scope="session")
def trained_run(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs of configs/local.yaml (test-sized) on 2 ranks, with validation; rank 0's
    log is kept as `train.log` beside the save dir."""
    tmp = tmp_path_factory.mktemp("trained")
    config = small_config(small_graph, num_epochs=3, eval_log_every_n=100, checkpoint_every_n=100)
    config["runtime"]["profile_steps"] = 5
    result = run_torchrun(2, write_config(tmp / "config.yaml", config), tmp / "run")
    assert_ok(result)
    (tmp / "train.log").write_text(result.stdout)
    return tmp / "run"


def small_config(graph: Path, **training: Any) -> dict[str, Any]:
    """configs/local.yaml re-pointed at the small graph, with test-sized tables and steps."""
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    sizes = {"user": SMALL_GRAPH["num_users"], "tweet": SMALL_GRAPH["num_tweets"],
             "advertiser": SMALL_GRAPH["num_advertisers"]}  # fmt: skip
    for table in config["model"]["embeddings"]["tables"]:
        table["num_embeddings"] = sizes[table["name"]]
        table["embedding_dim"] = 16
    config["train_data"].update(data_root=str(graph / "train"), per_replica_batch_size=250)
    config["validation_data"].update(
        data_root=str(graph / "validation"), per_replica_batch_size=250
    )
    config["training"].update(
        num_epochs=1, checkpoint_every_n=20, train_log_every_n=10, eval_log_every_n=1000
    )
    config["training"].update(training)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(config), sort_keys=False))
    return path


def torchrun_command(nproc: int, config: Path, save_dir: Path, max_restarts: int = 0) -> list[str]:
    """torchrun through tml.core.launch, as the entrypoint and `make run-local` start it."""
    return [
        sys.executable, "-m", "tml.core.launch", "--standalone", "--nnodes", "1",
        "--nproc_per_node", str(nproc), "--max_restarts", str(max_restarts), str(RUN_PY),
        f"--config_yaml_path={config}", f"--save_dir={save_dir}",
    ]  # fmt: skip


def torchrun_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO)
    return env


def run_torchrun(
    nproc: int, config: Path, save_dir: Path, timeout: float = 300, max_restarts: int = 0
) -> subprocess.CompletedProcess[str]:
    """Train for real: torchrun with gloo on CPU, the same command users run."""
    return subprocess.run(
        torchrun_command(nproc, config, save_dir, max_restarts),
        capture_output=True, text=True, timeout=timeout, env=torchrun_env(), cwd=REPO,
    )  # fmt: skip


def start_torchrun(
    nproc: int, config: Path, save_dir: Path, log: Path, max_restarts: int = 0
) -> subprocess.Popen:
    """Launch in its own process group, so a test can kill the whole job like a crash would."""
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen(
        torchrun_command(nproc, config, save_dir, max_restarts), stdout=handle,
        stderr=subprocess.STDOUT, env=torchrun_env(), cwd=REPO, start_new_session=True,
    )  # fmt: skip


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (torchrun starts its workers in sessions of their own)."""
    children = process_children()
    found, frontier = [], [pid]
    while frontier:
        found += (frontier := [c for p in frontier for c in children.get(p, [])])
    return found


def worker_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker with global rank `rank` below a launcher."""
    for pid in descendants(launcher.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:  # torchrun's workers are its only children
            return pid
    raise LookupError(f"no worker with RANK={rank} below {launcher.pid}")


def kill_job(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and every worker at once, as a crash or a lost node would."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )


def embeddings(save_dir: Path, table: str) -> np.ndarray:
    """An exported table (save_dir/embeddings/<table>.parquet) as a rows x dim array."""
    column = pq.read_table(save_dir / "embeddings" / f"{table}.parquet").column("embedding")
    return np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)


SYNTHETIC_TABLES = ("user", "tweet", "advertiser")


def assert_same_embeddings(save_dir: Path, reference: Path) -> None:
    """Every table of the two runs' exports is equal, bit for bit."""
    for table in SYNTHETIC_TABLES:
        np.testing.assert_array_equal(embeddings(save_dir, table), embeddings(reference, table))


def wait_for_first_checkpoint(job: subprocess.Popen, save_dir: Path, log: Path) -> None:
    """Block until `job` has published a checkpoint; fail (with its log) if it ends first."""
    deadline = time.monotonic() + 120
    while not complete_checkpoints(save_dir / "checkpoints"):
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
