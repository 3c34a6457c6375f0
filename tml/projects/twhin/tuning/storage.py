"""Where a study lives: SQLite under the tune dir by default, any Optuna RDB URL at scale.

Every worker of a study (threads of one `tune`, or `tune` processes on many machines) opens the
same storage. Workers send a heartbeat while a trial runs; a trial whose worker stopped beating
(killed, preempted, its machine gone) is failed by the next worker that looks and queued again
as a new trial with the same parameters, which resumes the run from its checkpoint.

`TrialSlots` makes "at most N trials" exact across workers: deciding to start a trial and
creating it happen under a lock the storage provides (a file lock beside a SQLite file, an
advisory lock in PostgreSQL, GET_LOCK in MySQL).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

log = logging.getLogger("tml")

STUDY_FILE = "study.db"
STORAGE_ENV = "TML_TUNE_STORAGE"
MAX_RETRIES = 3

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Optuna warns that heartbeats are meant for Study.optimize; the worker's ask/tell loop (needed
# for the trial-slot lock) records them itself, as optimize would.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def default_url(save_dir: Path) -> str:
    return f"sqlite:///{(save_dir / STUDY_FILE).resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for logs and files."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, heartbeat_s: int, wait_s: float = 120) -> RDBStorage:
    """An RDB storage with heartbeats; stale trials are retried up to MAX_RETRIES times.

    Waits up to `wait_s` for a database that is still starting (a worker pod next to a new
    PostgreSQL pod), and retries when workers starting together race to create the tables.
    """
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        # Workers in threads wait on SQLite's write lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
        wait_s = 0  # a file either opens or never will
    else:
        engine_kwargs["pool_pre_ping"] = True  # a server restart does not break the next trial
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=heartbeat_s * 4,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRIES),
            )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError) as exc:  # fmt: skip
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the study database %s (%s)", redact(url),
                     str(getattr(exc, "orig", exc)).strip().splitlines()[0])  # fmt: skip
            time.sleep(random.uniform(1, 3))


def retry_later(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a copy of a failed trial, as the heartbeat does for a dead worker's trial."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


class TrialSlots:
    """A lock shared by every worker of a study, held while one decides to start a trial."""

    def __init__(self, storage: RDBStorage, study_name: str) -> None:
        self._engine = storage.engine
        self._key = zlib.crc32(f"tml-twhin tune {study_name}".encode())
        self._threads = threading.Lock()  # flock and sessions also exclude, this is cheaper
        self._dialect = self._engine.dialect.name
        if self._dialect == "sqlite":
            database = self._engine.url.database or ""
            self._lock_file = Path(database + ".lock") if database not in ("", ":memory:") else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            if self._dialect == "sqlite":
                with self._file_lock():
                    yield
            elif self._dialect in ("postgresql", "mysql"):
                with self._database_lock():
                    yield
            else:  # other databases: workers may start a few trials more than asked
                yield

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._lock_file is None:
            yield
            return
        with open(self._lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _database_lock(self) -> Iterator[None]:
        take, give = {
            "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
            "mysql": ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"),
        }[self._dialect]
        key = self._key if self._dialect == "postgresql" else f"tml-twhin-{self._key}"
        with self._engine.connect() as connection:
            connection.execute(sqlalchemy.text(take), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text(give), {"key": key})
