"""Outputs that readers never see half-written: a file is written beside its final name and
renamed into place, a directory is built under a temporary name and renamed into place."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output directory holds something and overwriting was not asked for."""


def staging_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (hidden, same folder)."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a staging path to write; on success it replaces `path`, on failure it is removed."""
    staging = staging_path(path)
    try:
        yield staging
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_output(path) as staging:
        staging.write_text(text)


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """The `--overwrite` flag of commands that write an output directory (`check_out_dir`)."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists and is not empty"
    )


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber existing results unless asked to."""
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output directory {out} is not empty; pass --overwrite to replace it"
            )


def staging_directory(out: Path) -> Path:
    """A new, empty sibling of `out` to build it in (see `publish_directory`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the rename; mkdir honours the umask.
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    return staging


@contextmanager
def built_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """A staging directory to build `out` in: published as `out` when the block ends, removed
    when it raises, so a failed run never leaves a half-written `out`."""
    staging = staging_directory(out)
    try:
        yield staging
        publish_directory(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_directory(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished `staging` directory to `out`, replacing an old `out` only now."""
    check_out_dir(out, overwrite)
    if out.is_dir():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, trash / "old")
        os.rename(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, out)
