"""One job per save dir (tml.core.save_dir_lock): a live holder is named, a gone one replaced.

The whole-job case (a second job while the first trains) is in tests/distributed/test_job_control.py.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tml.core import save_dir_lock
from tml.core.save_dir_lock import LOCK_FILE, LockRecord, SaveDirLock, SaveDirLockedError


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A live process of this machine that is not this test."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def other_job(pid: int, **fields: object) -> LockRecord:
    record = LockRecord.mine()
    record.job, record.pid = "job-7", pid
    record.process_start = save_dir_lock._process_start(pid)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def place(save_dir: Path, record: LockRecord) -> Path:
    save_dir.mkdir(exist_ok=True)
    (save_dir / LOCK_FILE).write_text(json.dumps(asdict(record)))
    return save_dir / LOCK_FILE


def holder(save_dir: Path) -> dict:
    return json.loads((save_dir / LOCK_FILE).read_text())


def test_a_live_job_on_this_machine_keeps_its_save_dir(
    tmp_path: Path, sleeper: subprocess.Popen
) -> None:
    place(tmp_path, other_job(sleeper.pid, heartbeat=time.time() - 3600))  # pid decides here
    with pytest.raises(SaveDirLockedError) as error:
        SaveDirLock(tmp_path).acquire()
    message = str(error.value)
    assert f"save dir {tmp_path} is in use by job job-7 (pid {sleeper.pid} on " in message
    assert f"on {socket.gethostname()}, started " in message and "another --save_dir" in message
    assert holder(tmp_path)["job"] == "job-7"


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    place(tmp_path, other_job(gone.pid, process_start="1"))
    lock = SaveDirLock(tmp_path)
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert "taking over the save dir lock of job job-7" in caplog.text
    assert f"pid {gone.pid} no longer runs on this machine" in caplog.text
    assert holder(tmp_path)["pid"] == lock.record.pid
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_another_machine_holds_the_lock_while_its_heartbeat_is_recent(tmp_path: Path) -> None:
    place(tmp_path, other_job(4242, machine="elsewhere", host="node-7", heartbeat=time.time()))
    with pytest.raises(SaveDirLockedError, match=r"job job-7 \(pid 4242 on node-7, started"):
        SaveDirLock(tmp_path).acquire()


def test_a_stopped_heartbeat_of_another_machine_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = time.time() - 3600
    place(tmp_path, other_job(4242, machine="elsewhere", heartbeat=old, heartbeat_every_s=0.2))
    with caplog.at_level(logging.WARNING):
        SaveDirLock(tmp_path).acquire()
    assert re.search(r"its heartbeat stopped 36\d\d s ago", caplog.text), caplog.text


def test_an_old_but_moving_heartbeat_is_a_live_job_with_a_skewed_clock(tmp_path: Path) -> None:
    record = other_job(4242, machine="elsewhere", heartbeat=time.time() - 3600,
                       heartbeat_every_s=0.4)  # fmt: skip
    path = place(tmp_path, record)

    def beat() -> None:
        time.sleep(0.2)
        record.heartbeat += 10
        path.write_text(json.dumps(asdict(record)))

    threading.Thread(target=beat).start()
    with pytest.raises(SaveDirLockedError):
        SaveDirLock(tmp_path).acquire()


def test_a_restarted_attempt_of_the_same_job_takes_its_lock_back(
    tmp_path: Path, sleeper: subprocess.Popen, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-7")
    place(tmp_path, other_job(sleeper.pid))  # the earlier attempt's rank 0, still exiting
    lock = SaveDirLock(tmp_path)
    lock.acquire()
    assert holder(tmp_path)["pid"] == lock.record.pid
    lock.release()


def test_the_holder_refreshes_its_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(save_dir_lock, "HEARTBEAT_S", 0.05)
    lock = SaveDirLock(tmp_path)
    lock.acquire()
    first = holder(tmp_path)["heartbeat"]
    time.sleep(0.3)
    assert holder(tmp_path)["heartbeat"] > first
    lock.release()
