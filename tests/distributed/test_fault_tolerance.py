"""Crashes, preemption and resharding, through the real command (tml.core.launch = torchrun).

All runs train the test-sized graph for one epoch (118 steps on 2 ranks, a checkpoint every 20)
and are compared with one uninterrupted run of the same config, bit for bit where the world size
is the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    assert_ok,
    assert_same_embeddings,
    kill_job,
    run_torchrun,
    small_config,
    start_torchrun,
    wait_for_first_checkpoint,
    worker_pid,
    write_config,
)  # fmt: skip
from tml.core.checkpoint import complete_checkpoints, read_trainer_state
from tml.core.launch import DEFAULT_GRACE_PERIOD_S


@pytest.fixture(scope="module")
def uninterrupted(small_graph: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config file, save dir) of one epoch on 2 ranks, never interrupted."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(tmp / "config.yaml", small_config(small_graph, checkpoint_every_n=20))
    assert_ok(run_torchrun(2, config, tmp / "run"))
    return config, tmp / "run"


def interrupt_after_first_checkpoint(
    config: Path, tmp_path: Path, interrupt: Callable[[subprocess.Popen], None], timeout: float
) -> tuple[Path, int, str, float]:
    """Start 2 ranks (torchrun may restart them 3 times), call `interrupt(job)` once the first
    checkpoint exists and wait up to `timeout` s: (save dir, exit code, log, seconds to exit)."""
    save_dir, log = tmp_path / "run", tmp_path / "job.log"
    job = start_torchrun(2, config, save_dir, log, max_restarts=3)
    try:
        wait_for_first_checkpoint(job, save_dir, log)
        sent = time.monotonic()
        interrupt(job)
        code = job.wait(timeout=timeout)
        took = time.monotonic() - sent
    finally:
        kill_job(job)
    return save_dir, code, log.read_text(), took


def test_killed_rank_is_restarted_by_torchrun_and_the_job_ends_like_an_uninterrupted_run(
    uninterrupted: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = uninterrupted

    def kill_rank_1(job: subprocess.Popen) -> None:
        os.kill(worker_pid(job, rank=1), signal.SIGKILL)

    save_dir, code, output, _ = interrupt_after_first_checkpoint(
        config, tmp_path, kill_rank_1, timeout=240
    )
    assert code == 0, output[-4000:]
    assert output.count("world size 2 on") == 2, "torchrun did not restart the workers once"
    assert f"resumed from {save_dir / 'checkpoints'}/step_" in output
    assert_same_embeddings(save_dir, reference)


def test_sigterm_checkpoints_at_the_next_step_exits_0_and_a_second_start_finishes(
    uninterrupted: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = uninterrupted

    def terminate(job: subprocess.Popen) -> None:  # torchrun's group, as `kill` or a scheduler
        os.killpg(job.pid, signal.SIGTERM)

    save_dir, code, output, took = interrupt_after_first_checkpoint(
        config, tmp_path, terminate, timeout=DEFAULT_GRACE_PERIOD_S
    )
    assert code == 0, output[-4000:]
    assert took < DEFAULT_GRACE_PERIOD_S
    stopped = int(output.split("stopped at step ")[1].split()[0])
    assert 20 <= stopped < 118
    newest = complete_checkpoints(save_dir / "checkpoints")[-1]
    assert newest.name == f"step_{stopped}"
    assert not (save_dir / "embeddings").exists(), "a stopped run is not finished"

    second = run_torchrun(2, config, save_dir)
    assert_ok(second)
    assert f"resumed from {newest} at step {stopped}" in second.stdout
    assert_same_embeddings(save_dir, reference)


def test_checkpoints_move_between_world_sizes_and_sharding_plans(
    uninterrupted: tuple[Path, Path], tmp_path: Path
) -> None:
    config_file, reference = uninterrupted
    save_dir = tmp_path / "run"
    (save_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints" / "step_80", save_dir / "checkpoints" / "step_80")
    shutil.copy(reference / "config.yaml", save_dir / "config.yaml")
    config = yaml.safe_load(config_file.read_text())

    def run(nproc: int, steps: int, **training: object) -> subprocess.CompletedProcess[str]:
        config["training"].update(num_train_steps=steps, **training)
        return run_torchrun(nproc, write_config(tmp_path / f"{steps}.yaml", config), save_dir)

    # 2 ranks -> 1: the data position maps by edges consumed (80 steps x 2 x 250 edges).
    one = run(1, 90)
    assert_ok(one)
    assert "world size or batch size changed" in one.stdout
    assert "resumed from" in one.stdout and "(epoch 0, step 160 of it)" in one.stdout
    state = read_trainer_state(save_dir / "checkpoints" / "step_90")
    assert (state["world_size"], state["step_in_epoch"]) == (1, 170)

    # 1 rank -> 2 under another plan and optimizer: plain Adagrad keeps a value per weight, not
    # per row, so the row-wise state cannot move; the error says what to do.
    for table in config["model"]["embeddings"]["tables"]:
        table.update(sharding_type="table_wise", optimizer={"adagrad": {"lr": 0.05}})
    refused = run(2, 100)
    assert refused.returncode == 2
    assert "cannot resume the optimizer state" in refused.stderr
    assert "training.resume_optimizer: false" in refused.stderr
    assert complete_checkpoints(save_dir / "checkpoints")[-1].name == "step_90"

    two = run(2, 100, resume_optimizer=False)
    assert_ok(two)
    assert "restored the weights only" in two.stdout
    assert re.search(r"table user: .*, table_wise on ranks", two.stdout)
    state = read_trainer_state(save_dir / "checkpoints" / "step_100")
    assert (state["world_size"], state["step_in_epoch"]) == (2, 95)
    assert json.loads((save_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 100
