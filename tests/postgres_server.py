"""A real, throwaway PostgreSQL server for tests: initdb in a temp dir, pg_ctl start and stop.

Uses the server binaries of the Debian package (`apt-get install postgresql`; `.ci/run` installs
it where it is missing) or any `initdb`/`pg_ctl` on PATH. PostgreSQL refuses to run as root, so
as root the server runs as the package's `postgres` user (or `nobody`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SERVER_USER_CANDIDATES = ("postgres", "nobody")


def find_server_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parents[1].name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """A command prefix that drops root (PostgreSQL's own rule), and that user."""
    if os.geteuid() != 0:
        return [], None
    for name in SERVER_USER_CANDIDATES:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups", "--"], user  # fmt: skip
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


def _run(prefix: list[str], cwd: Path, *args: str) -> None:
    result = subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"PostgreSQL: {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server on a free localhost port; yields its SQLAlchemy URL; stops it after."""
    bin_dir = find_server_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl)")
    prefix, user = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="tml-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    try:
        _run(prefix, root, str(bin_dir / "initdb"), "-D", str(data), "-U", "tune",
             "--auth=trust", "-E", "UTF8")  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(prefix, root, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
             "-l", str(root / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
        try:
            yield f"postgresql://tune@127.0.0.1:{port}/postgres"
        finally:
            _run(prefix, root, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                 "-w", "stop")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
