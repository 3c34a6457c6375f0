"""Several `tune` workers on one study in a real PostgreSQL server (started by the tests): each
trial runs once, and a worker killed mid-trial leaves a study the others finish."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import find_server_bin, postgres_server
from tests.tune_helpers import LR, load_study, make_graph, runs_in, start_tune, write_space
from tml.core.checkpoint import complete_checkpoints

# In `make test-tools` (CI runs it after `make test`), not `make test`: see docs/development.md.
pytestmark = pytest.mark.tools


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if find_server_bin() is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence there is a failure
            pytest.fail(
                "no PostgreSQL server binaries in CI; tools/ensure-postgres.sh installs them"
            )
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_graph(tmp_path_factory.mktemp("tune_pg") / "kg", epochs=4)


def started_trials(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[tune\] trial (\d+) starts", log)]


def wait(process, seconds: float = 300) -> int:
    try:
        return process.wait(timeout=seconds)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_two_workers_share_one_study_and_run_each_trial_once(
    postgres_url: str, base: Path, tmp_path: Path
) -> None:
    space = write_space(tmp_path / "space.yaml", LR)
    tune_dir = tmp_path / "tune"
    args = ("--storage", postgres_url, "--study_name", "shared", "--trials", "4",
            "--search_space", str(space), "--pruner", "none", "--threads_per_trial", "1")  # fmt: skip
    logs = [tmp_path / "worker_a.log", tmp_path / "worker_b.log"]
    workers = [start_tune(base, tune_dir, log, *args) for log in logs]
    assert [wait(w) for w in workers] == [0, 0], [log.read_text()[-3000:] for log in logs]
    study = load_study(postgres_url, "shared")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    started = [started_trials(log.read_text()) for log in logs]
    assert all(started), started  # both workers took trials from the one study
    assert sorted(started[0] + started[1]) == [0, 1, 2, 3]  # and none was run twice
    for number in range(4):
        assert runs_in((tune_dir / "trials" / str(number) / "train.log").read_text()) == 1


def test_a_worker_killed_mid_trial_leaves_the_study_usable(
    postgres_url: str, base: Path, tmp_path: Path
) -> None:
    # Long enough (24 epochs) that the kill comes mid-run, just after the first checkpoint.
    epochs = {"name": "epochs", "field": "training.num_epochs", "type": "categorical",
              "choices": [24]}  # fmt: skip
    space = write_space(tmp_path / "space.yaml", LR, epochs)
    tune_dir = tmp_path / "tune"
    args = ("--storage", postgres_url, "--study_name", "killed", "--trials", "2",
            "--search_space", str(space), "--pruner", "none", "--heartbeat_s", "1",
            "--threads_per_trial", "1")  # fmt: skip
    doomed = start_tune(base, tune_dir, tmp_path / "doomed.log", *args)
    first_run = tune_dir / "trials" / "0"
    deadline = time.monotonic() + 240
    while not (first_run / "checkpoints").is_dir() or not complete_checkpoints(
        first_run / "checkpoints"
    ):
        assert doomed.poll() is None and time.monotonic() < deadline, (
            tmp_path / "doomed.log"
        ).read_text()[-3000:]
        time.sleep(0.1)
    os.kill(doomed.pid, signal.SIGKILL)  # the worker alone, as a lost machine; its run is told
    doomed.wait()  # to stop by the kernel (parent-death signal), checkpoints and exits
    assert load_study(postgres_url, "killed").trials[0].state.name == "RUNNING"
    survivor = start_tune(base, tune_dir, tmp_path / "survivor.log", *args, "--jobs", "2")
    assert wait(survivor) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    trials = load_study(postgres_url, "killed").trials
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"], states  # the target of 2 is met
    (retry,) = [t for t in trials if "failed_trial" in t.system_attrs]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    assert retry.user_attrs["save_dir"] == str(first_run)  # resumed in the killed trial's dir
    first_log = (first_run / "train.log").read_text()
    assert "resumed from" in first_log and runs_in(first_log) == 1
    assert (tune_dir / "best.yaml").is_file()
