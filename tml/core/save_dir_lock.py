"""One job at a time writes into a save dir: `<save_dir>/job.lock` names the job that does.

Two jobs on one save dir would interleave checkpoints and metrics and each resume from the
other's steps. So rank 0 of a job takes the lock before training and holds it for all ranks and
nodes of the job (the job is torchrun's run id: the same for every node and every restart of the
job). The lock file names the job, host, pid and start time, and rank 0 refreshes a heartbeat
in it every few seconds.

Another job finding the lock exits 2 naming the holder, unless the holder is gone:
* on the same machine (same boot and pid namespace), when its pid no longer runs that process;
* elsewhere, when its heartbeat stopped: older than STALE_AFTER_S by this machine's clock and
  not moving for 1.5 heartbeat intervals (so a skewed clock alone never takes a live lock).
A stale lock is taken over with a warning. A restarted attempt of the same job takes its own
lock back without one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from tml.core.errors import InputError

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class SaveDirLockedError(InputError):
    """The save dir is held by another job that is alive."""


def job_id() -> str:
    """This job's name: torchrun's run id (shared by its nodes and restarts), else this pid."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or f"pid-{os.getpid()}@{socket.gethostname()}"


def _machine() -> str:
    """What makes a pid meaningful: the kernel boot and the pid namespace it lives in."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (None if it does not run)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class LockRecord:
    """What the lock file says: who holds the save dir and whether they still beat."""

    job: str
    host: str
    pid: int
    started: str  # local time, for people
    machine: str
    process_start: str | None
    heartbeat: float  # time.time() of the last beat
    heartbeat_every_s: float

    @classmethod
    def mine(cls) -> LockRecord:
        pid = os.getpid()
        return cls(
            job=job_id(), host=socket.gethostname(), pid=pid,
            started=time.strftime("%Y-%m-%d %H:%M:%S %z"), machine=_machine(),
            process_start=_process_start(pid), heartbeat=time.time(),
            heartbeat_every_s=HEARTBEAT_S,
        )  # fmt: skip

    def same_holder(self, other: LockRecord | None) -> bool:
        """Whether `other` names the same process of the same job."""
        return other is not None and (other.job, other.machine, other.pid) == (
            self.job, self.machine, self.pid
        )  # fmt: skip

    def describe(self) -> str:
        age = time.time() - self.heartbeat
        return (
            f"job {self.job} (pid {self.pid} on {self.host}, started {self.started}, "
            f"last heartbeat {age:.0f} s ago)"
        )


def _read(path: Path) -> LockRecord | None:
    """The lock file's record; None when there is none or it is unreadable (a crashed write)."""
    try:
        return LockRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return LockRecord("unknown", "unknown", 0, "unknown", "", None, 0.0, HEARTBEAT_S)


def _text(record: LockRecord) -> str:
    return json.dumps(asdict(record), indent=2) + "\n"


def _write(path: Path, record: LockRecord) -> None:
    """Replace the lock file in one step (readers never see half a record)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(_text(record))
    os.replace(staging, path)


def _gone_why(holder: LockRecord, path: Path) -> str | None:
    """Why the holder of the lock at `path` is gone (None while it may be alive)."""
    if holder.job == "unknown":
        return "the lock file is unreadable"
    if holder.machine == _machine():
        if _process_start(holder.pid) != holder.process_start:
            return f"pid {holder.pid} no longer runs on this machine"
        return None
    if time.time() - holder.heartbeat < STALE_AFTER_S:
        return None
    time.sleep(1.5 * holder.heartbeat_every_s)  # a stopped heartbeat, or a skewed clock?
    again = _read(path)
    if again is not None and again.heartbeat != holder.heartbeat:
        return None
    return f"its heartbeat stopped {time.time() - holder.heartbeat:.0f} s ago"


class SaveDirLock:
    """The lock of one save dir, taken by rank 0 for the whole job."""

    def __init__(self, save_dir: Path) -> None:
        self.path = Path(save_dir) / LOCK_FILE
        self.record = LockRecord.mine()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock, or raise SaveDirLockedError naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._take_over(_read(self.path))
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(_text(self.record))
        self._beat = threading.Thread(target=self._heartbeat, name="save-dir-lock", daemon=True)
        self._beat.start()

    def _take_over(self, holder: LockRecord | None) -> None:
        if holder is not None and holder.job != self.record.job:
            why = _gone_why(holder, self.path)
            if why is None:
                raise SaveDirLockedError(
                    f"save dir {self.path.parent} is in use by {holder.describe()}; let it "
                    f"finish or stop it, or use another --save_dir (its lock, {self.path}, is "
                    f"taken over once that job is gone)"
                )
            log.warning("taking over the save dir lock of %s: %s", holder.describe(), why)
        elif holder is not None:
            log.info("taking back the save dir lock of this job's earlier attempt (pid %d)",
                     holder.pid)  # fmt: skip
        _write(self.path, self.record)
        time.sleep(0.2)  # two jobs taking over at once: the later rename wins, the other sees it
        if not self.record.same_holder(_read(self.path)):
            raise SaveDirLockedError(f"save dir {self.path.parent}: another job took it just now")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = _read(self.path)
            if not self.record.same_holder(holder):
                log.error("the save dir lock %s was taken by another job: %s", self.path,
                          holder.describe() if holder else "removed")  # fmt: skip
                return
            self.record.heartbeat = time.time()
            try:
                _write(self.path, self.record)
            except OSError as exc:  # e.g. a full disk: keep training, say so
                log.warning("cannot refresh the save dir lock %s: %s", self.path, exc)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still this job's."""
        self._stop.set()
        if self.record.same_holder(_read(self.path)):
            self.path.unlink(missing_ok=True)


def hold_save_dir(save_dir: Path, rank: int) -> SaveDirLock | None:
    """Rank 0 takes the lock for the job (a collective): the lock on rank 0, None elsewhere.

    Raises SaveDirLockedError on every rank when the save dir is held by another live job.
    """
    lock, problem = None, None
    if rank == 0:
        lock = SaveDirLock(save_dir)
        try:
            lock.acquire()
        except InputError as exc:
            lock, problem = None, str(exc)
        except OSError as exc:
            lock, problem = None, f"cannot write the save dir lock in {save_dir}: {exc}"
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared: list[Any] = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem:
        raise SaveDirLockedError(problem)
    return lock
