"""Interrupted jobs end like uninterrupted ones, through the real commands.

Each case of tests/resume_cells.py's INTERRUPTIONS trains the test-sized graph for one epoch on 2
ranks (118 steps, a checkpoint every 20, validation every 40), is interrupted once (a run that
ends early and runs again, SIGKILL of rank 1 with the launcher's `--max_restarts 3`, or SIGTERM
to the launcher and the same command again) and must export the same embeddings, bit for bit, as
one run straight through. Plain torchrun is one of the launchers: the workers themselves survive
its restarts and its SIGTERM. `make test` runs the cases marked fast, `make test-resume` all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    assert_ok,
    assert_same_embeddings,
    kill_job,
    small_config,
    start_logged,
    torchrun_command,
    torchrun_env,
    wait_for_first_checkpoint,
    worker_pid,
    write_config,
)  # fmt: skip
from tests.distributed.test_launch import ENTRYPOINT, entrypoint_env
from tests.resume_cells import INTERRUPTIONS, OPTIMIZERS, Interruption
from tml.core.checkpoint import complete_checkpoints
from tml.core.errors import stop_exit_code
from tml.core.stop_request import DEFAULT_GRACE_PERIOD_S

ALL = os.environ.get("TML_RESUME_MATRIX") == "all"
CASES = [case for case in INTERRUPTIONS if ALL or case.fast]
LAUNCHERS = {"torchrun": "torch.distributed.run", "tml.core.launch": "tml.core.launch"}


def interruption_config(graph: Path, optimizer: str, sharding: str, **training: object) -> dict:
    """One epoch on 2 ranks of the test-sized local.yaml, with these table optimizers."""
    config = small_config(graph, checkpoint_every_n=20, eval_log_every_n=40, num_eval_steps=2)
    config["training"].update(training)
    for table, algorithm in zip(
        config["model"]["embeddings"]["tables"], OPTIMIZERS[optimizer], strict=True
    ):
        table["optimizer"] = {algorithm: {"lr": 0.05}}
        if sharding != "planner":
            table["sharding_type"] = sharding
    return config


@pytest.fixture(scope="module")
def reference(
    small_graph: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], tuple[Path, Path]]:
    """(config file, save dir) of one uninterrupted run per (optimizer, sharding), made once."""
    made: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(optimizer: str, sharding: str) -> tuple[Path, Path]:
        if (optimizer, sharding) not in made:
            tmp = tmp_path_factory.mktemp(f"uninterrupted-{optimizer}-{sharding}")
            config = interruption_config(small_graph, optimizer, sharding)
            config_file = write_config(tmp / "config.yaml", config)
            result = subprocess.run(
                torchrun_command(2, config_file, tmp / "run"), capture_output=True, text=True,
                timeout=300, env=torchrun_env(),
            )  # fmt: skip
            assert_ok(result)
            made[optimizer, sharding] = config_file, tmp / "run"
        return made[optimizer, sharding]

    return get


def start(case: Interruption, config: Path, save_dir: Path, log: Path) -> subprocess.Popen:
    """The job as `case.launcher` starts it: 2 ranks, up to 3 restarts."""
    if case.launcher == "entrypoint.sh":
        env = entrypoint_env(CONFIG_YAML_PATH=str(config), SAVE_DIR=str(save_dir),
                             NPROC_PER_NODE="2", MAX_RESTARTS="3")  # fmt: skip
        return start_logged([str(ENTRYPOINT)], log, env)
    command = torchrun_command(2, config, save_dir, 3, LAUNCHERS[case.launcher])
    return start_logged(command, log)


def run_to_end(case: Interruption, config: Path, save_dir: Path, log: Path) -> str:
    """Run the job to its end (exit 0); its output."""
    job = start(case, config, save_dir, log)
    try:
        assert job.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        kill_job(job)
    return log.read_text()


def interrupt(
    case: Interruption, config: Path, save_dir: Path, log: Path, timeout: float
) -> tuple[int, str, float]:
    """Start the job, interrupt it once its first checkpoint exists, and wait for it to end:
    (exit code, output, seconds from the interruption to the end)."""
    job = start(case, config, save_dir, log)
    try:
        wait_for_first_checkpoint(job, save_dir, log)
        sent = time.monotonic()
        if case.how == "kill":
            os.kill(worker_pid(job, rank=1), signal.SIGKILL)
        else:  # the launcher alone, as Kubernetes signals a container's first process
            os.kill(job.pid, signal.SIGTERM)
        code = job.wait(timeout=timeout)
        took = time.monotonic() - sent
    finally:
        kill_job(job)
    return code, log.read_text(), took


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_interrupted_job_ends_like_an_uninterrupted_one(
    case: Interruption,
    reference: Callable[[str, str], tuple[Path, Path]],
    small_graph: Path,
    tmp_path: Path,
) -> None:
    config, uninterrupted = reference(case.optimizer, case.sharding)
    save_dir = tmp_path / "run"
    if case.how == "end":  # the run of issue 13: 50 steps, then the same save dir to the end
        early = interruption_config(small_graph, case.optimizer, case.sharding, num_train_steps=50)
        run_to_end(case, write_config(tmp_path / "early.yaml", early), save_dir,
                   tmp_path / "early.log")  # fmt: skip
        output = run_to_end(case, config, save_dir, tmp_path / "second.log")
        assert f"resumed from {save_dir / 'checkpoints'}/step_50 at step 50" in output
    elif case.how == "kill":
        code, output, _ = interrupt(case, config, save_dir, tmp_path / "job.log", timeout=240)
        assert code == 0, output[-4000:]
        assert output.count("world size 2 on") == 2, "the workers were not restarted once"
        assert f"resumed from {save_dir / 'checkpoints'}/step_" in output
    else:
        code, output, took = interrupt(case, config, save_dir, tmp_path / "job.log", timeout=60)
        # Plain torchrun kills its workers 30 s after it forwards SIGTERM: they stop before.
        assert took < DEFAULT_GRACE_PERIOD_S, output[-4000:]
        if case.launcher != "torchrun":  # torchrun's own exit code is its own
            assert code == stop_exit_code(signal.SIGTERM), output[-4000:]
        stopped = int(output.split("stopped at step ")[1].split()[0])
        assert 20 <= stopped < 118
        assert complete_checkpoints(save_dir / "checkpoints")[-1].name == f"step_{stopped}"
        assert not (save_dir / "embeddings").exists(), "a stopped run is not finished"
        output = run_to_end(case, config, save_dir, tmp_path / "second.log")
        assert f"resumed from {save_dir / 'checkpoints'}/step_{stopped} at step {stopped}" in output
    assert_same_embeddings(save_dir, uninterrupted)
