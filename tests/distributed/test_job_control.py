"""How jobs end, through the real commands: exit codes, orphans, one job per save dir, signals.

Exit codes (tml.core.errors): 0 finished, 1 failed while training (retried by --max_restarts),
2 bad input (never retried), 128 + signal stopped on request after a checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    RUN_PY,
    kill_job,
    small_config,
    start_logged,
    start_torchrun,
    torchrun_env,
    wait_for_first_checkpoint,
    worker_pid,
    write_config,
)  # fmt: skip
from tml.core.checkpoint import complete_checkpoints
from tml.core.errors import EXIT_FAILURE, stop_exit_code
from tml.core.save_dir_lock import LOCK_FILE


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def long_config(graph: Path, path: Path, **training: object) -> Path:
    """Many epochs (minutes): every test interrupts the job at leisure after its first checkpoint,
    and a second job must find it still running, however fast the steps are."""
    return write_config(path, small_config(graph, num_epochs=40, num_eval_steps=0, **training))


def test_sigkill_of_torchrun_ends_its_workers_and_a_second_job_on_its_save_dir_exits_2(
    small_graph: Path, tmp_path: Path
) -> None:
    config = long_config(small_graph, tmp_path / "config.yaml")
    save_dir, log = tmp_path / "run", tmp_path / "job.log"
    job = start_torchrun(2, config, save_dir, log, launcher="torch.distributed.run")
    try:
        wait_for_first_checkpoint(job, save_dir, log)
        workers = [worker_pid(job, rank) for rank in (0, 1)]
        # A second job on the same save dir, while the first one trains.
        second = subprocess.run(
            [sys.executable, str(RUN_PY), f"--config_yaml_path={config}", f"--save_dir={save_dir}"],
            capture_output=True, text=True, timeout=120, env=torchrun_env(), cwd=REPO,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr[-3000:]
        (error,) = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert f"save dir {save_dir} is in use by job " in error
        assert f"(pid {workers[0]} on " in error and "last heartbeat" in error
        assert all(alive(pid) for pid in workers), "the second job disturbed the first"
        job.send_signal(signal.SIGKILL)  # torchrun alone, as an OOM kill would
        job.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), log.read_text()[-3000:]
    finally:
        kill_job(job)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert "the torchrun agent (pid" in output and "is gone" in output
    # They stopped as on SIGTERM: a checkpoint, and the save dir's lock given back.
    stopped = int(output.split("stopped at step ")[1].split()[0])
    assert complete_checkpoints(save_dir / "checkpoints")[-1].name == f"step_{stopped}"
    assert not (save_dir / LOCK_FILE).exists()


def test_workers_that_outlive_the_grace_period_are_killed_and_the_job_exits_1(
    small_graph: Path, tmp_path: Path
) -> None:
    config = long_config(small_graph, tmp_path / "config.yaml")
    save_dir, log = tmp_path / "run", tmp_path / "job.log"
    env = dict(torchrun_env(), GRACE_PERIOD_S="3")
    command = [sys.executable, "-m", "tml.core.launch", "--standalone", "--nnodes", "1",
               "--nproc_per_node", "2", "--max_restarts", "3", str(RUN_PY),
               f"--config_yaml_path={config}", f"--save_dir={save_dir}"]  # fmt: skip
    job = start_logged(command, log, env)
    try:
        wait_for_first_checkpoint(job, save_dir, log)
        os.kill(worker_pid(job, rank=1), signal.SIGSTOP)  # a rank that cannot stop in time
        before = complete_checkpoints(save_dir / "checkpoints")
        sent = time.monotonic()
        job.send_signal(signal.SIGTERM)
        code = job.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        kill_job(job)
    output = log.read_text()
    assert code == EXIT_FAILURE, output[-3000:]
    assert 3 <= took < 30
    (error,) = [line for line in output.splitlines() if line.startswith("error: the workers")]
    assert "did not stop within 3 s" in error and "raise GRACE_PERIOD_S" in error
    assert output.count("world size 2 on") == 1, "workers killed for the grace period restarted"
    assert complete_checkpoints(save_dir / "checkpoints") == before  # none half-written


def test_sigterm_while_the_worker_imports_stops_it_at_its_first_step(
    small_graph: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", small_config(small_graph, num_eval_steps=0))
    save_dir = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, str(RUN_PY), f"--config_yaml_path={config}", f"--save_dir={save_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=torchrun_env(),
        cwd=REPO,
    )  # fmt: skip
    time.sleep(0.5)  # torch and TorchRec take seconds to import
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=120)
    assert job.returncode == stop_exit_code(signal.SIGTERM), output[-3000:]
    assert re.search(r"stopped at step 1 of \d+ on request \(SIGTERM\)", output), output[-3000:]
    assert [p.name for p in complete_checkpoints(save_dir / "checkpoints")] == ["step_1"]
    assert not list((save_dir / "checkpoints").glob(".tmp-*"))


def test_ctrl_c_in_make_run_local_checkpoints_and_ends_by_sigint(
    small_graph: Path, tmp_path: Path
) -> None:
    config = long_config(small_graph, tmp_path / "config.yaml")
    save_dir, log = tmp_path / "run", tmp_path / "make.log"
    command = ["make", "--no-print-directory", "run-local", "NPROC=2", "MAX_RESTARTS=3",
               f"CONFIG={config}", f"SAVE_DIR={save_dir}", f"SYNTHETIC_DIR={small_graph}"]  # fmt: skip
    job = start_logged(command, log)
    try:
        wait_for_first_checkpoint(job, save_dir, log)
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C does: the terminal's process group
        code = job.wait(timeout=60)
    finally:
        kill_job(job)
    output = log.read_text()
    # make waits for the launcher, then ends by the same signal: the shell shows 130.
    assert code in (-signal.SIGINT, stop_exit_code(signal.SIGINT)), output[-3000:]
    assert "launch: SIGINT: asking 2 workers to checkpoint and stop" in output
    assert "launch: the workers checkpointed and stopped on request (exit 130)" in output
    stopped = int(output.split("stopped at step ")[1].split()[0])
    assert complete_checkpoints(save_dir / "checkpoints")[-1].name == f"step_{stopped}"
    assert output.count("world size 2 on") == 1, "workers that stopped on request restarted"


@pytest.mark.parametrize("launcher", ["tml.core.launch"])
def test_a_value_error_inside_torchrec_is_a_failure_and_is_retried(
    small_graph: Path, tmp_path: Path, launcher: str
) -> None:
    config = small_config(small_graph, num_eval_steps=0)
    for table in config["model"]["embeddings"]["tables"]:
        table["sharding_type"] = "table_row_wise"
    # TorchRec's table_row_wise sharding raises ValueError for a pod size the world does not fit.
    env = dict(torchrun_env(), TORCHREC_RESOLVED_POD_SIZE="3")
    command = [sys.executable, "-m", launcher, "--standalone", "--nnodes", "1",
               "--nproc_per_node", "1", "--max_restarts", "1", str(RUN_PY),
               f"--config_yaml_path={write_config(tmp_path / 'c.yaml', config)}",
               f"--save_dir={tmp_path / 'run'}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == EXIT_FAILURE, result.stderr[-3000:]
    assert result.stderr.count("ValueError: World size 1 is not a multiple") == 2, "not retried"
    assert "the restarts are used up" in result.stderr
