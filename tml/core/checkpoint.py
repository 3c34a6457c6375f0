"""Checkpoints with torch.distributed.checkpoint: sharded, resharding on load, never half-visible.

Layout under `<save_dir>/checkpoints/`:

    step_<N>/.metadata, __<rank>_0.distcp    DCP files: model (all table shards, dense params)
                                             and optimizer state, any world size can load them
    step_<N>/rank_<r>.pt                     that rank's torch/numpy/Python RNG state, plain
                                             tensors and numbers (tml.core.rng_state)
    step_<N>/trainer_state.json              step, epoch, data position, and the size of every
                                             other file (the manifest); written last
    best.json                                which step_<N> is the run's best (early stopping),
                                             with its metrics; pruning never removes that one

A checkpoint is written into `.tmp-step_<N>/` and renamed to `step_<N>/` only after every rank
finished writing, so a crash mid-save leaves the previous checkpoint as the newest complete one.
`best.json` is replaced the same way (written beside, synced, renamed): a reader sees the old
pointer or the new one, never a torn file. A plain file rather than a symlink, because object
store mounts (gcsfuse, s3fs, blobfuse) store symlinks poorly or not at all.
A published checkpoint counts only while its files match the manifest: a truncated or missing
file (a full disk, a half-copied directory) makes it invisible, with a warning at resume.
Reading a checkpoint never runs code from its files (tml.core.safe_dcp, tml.core.rng_state).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from tml.core import rng_state, safe_dcp
from tml.core.distributed import from_every_rank

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
BEST_POINTER = "best.json"  # in the checkpoints folder: {"checkpoint": "step_<N>", "step": N, ...}
MANIFEST = "files"  # trainer_state.json key: file name -> size in bytes
_STEP_DIR = re.compile(r"^step_(\d+)$")
_LEFTOVER = re.compile(r"^\.(tmp|old)-step_\d+$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names its directory."""


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a usable checkpoint (None when it is): checks files, not tensors."""
    if not (path / ".metadata").is_file():
        return "no .metadata (DCP index)"
    try:
        state = read_trainer_state(path)
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE} unreadable ({exc})"
    for name, size in state.get(MANIFEST, {}).items():  # absent in checkpoints of older versions
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, the manifest says {size}"
    return None


def is_complete(path: Path) -> bool:
    """A published checkpoint whose files are all there, at the sizes written."""
    return checkpoint_problem(path) is None


def step_directories(directory: Path) -> list[Path]:
    """Every `step_<N>` folder, usable or not, oldest first."""
    if not directory.is_dir():
        return []
    found = [
        (int(match.group(1)), child)
        for child in directory.iterdir()
        if (match := _STEP_DIR.match(child.name))
    ]
    return [path for _, path in sorted(found)]


def complete_checkpoints(directory: Path) -> list[Path]:
    """Usable `step_<N>` folders, oldest first."""
    return [path for path in step_directories(directory) if is_complete(path)]


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / TRAINER_STATE).read_text())


def read_best(directory: Path) -> dict[str, Any] | None:
    """The record of `best.json` (which checkpoint is the best, and its metrics), or None when
    the run kept no best checkpoint. Raises CheckpointError when the file cannot be read."""
    pointer = Path(directory) / BEST_POINTER
    try:
        record = json.loads(pointer.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pointer} cannot be read ({exc})") from None
    if not isinstance(record, dict) or not _STEP_DIR.match(str(record.get("checkpoint", ""))):
        raise CheckpointError(f"{pointer} does not name a step_<N> checkpoint")
    return record


def best_checkpoint(directory: Path) -> Path | None:
    """The folder `best.json` names (None without one); it may since have been damaged."""
    record = read_best(directory)
    return Path(directory) / record["checkpoint"] if record else None


def write_json_durably(path: Path, record: dict[str, Any]) -> None:
    """Replace `path` with `record` atomically: written beside it, synced, then renamed."""
    staging = path.with_name(f".{path.name}.tmp")
    try:
        with open(staging, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def saved_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Global shape of every tensor in a checkpoint, by its DCP key (from .metadata only)."""
    try:
        metadata = safe_dcp.read_metadata(path)
    except safe_dcp.UnsafeCheckpointError as exc:
        raise CheckpointError(f"{path}/.metadata is refused: {exc}") from None
    except Exception as exc:  # a damaged .metadata fails inside pickle with anything
        raise CheckpointError(f"{path}/.metadata cannot be read ({exc})") from None
    return {
        key: tuple(entry.size)
        for key, entry in metadata.state_dict_metadata.items()
        if hasattr(entry, "size")
    }


def global_shapes(state: dict[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Global shape of every tensor of a (sharded) state dict, keyed like DCP flattens it."""
    shapes = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            shapes.update(global_shapes(value, f"{name}."))
        elif hasattr(value, "size") and callable(value.size):  # Tensor, ShardedTensor, DTensor
            shapes[name] = tuple(value.size())
    return shapes


def describe_failure(exc: BaseException) -> str:
    """One line from a DCP error, whose text is a traceback per rank."""
    if isinstance(exc, CheckpointException) and exc.failures:
        rank, (cause, _) = next(iter(exc.failures.items()))
        return f"rank {rank}: {describe_failure(cause)}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:400]


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints of one run (all ranks call every method)."""

    def __init__(self, directory: str | Path, keep: int | None, rank: int) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.rank = rank

    def latest(self) -> Path | None:
        """The newest usable checkpoint; newer broken ones are named in a warning (rank 0)."""
        candidates = self.usable()
        return candidates[0] if candidates else None

    def usable(self) -> list[Path]:
        """Usable checkpoints, newest first, as rank 0 sees them (so every rank agrees)."""
        found = []
        for path in reversed(step_directories(self.directory)):
            problem = checkpoint_problem(path)
            if problem is None:
                found.append(path)
            elif self.rank == 0:
                log.warning("skipping checkpoint %s: %s", path, problem)
        if dist.is_initialized() and dist.get_world_size() > 1:
            shared = [found]
            dist.broadcast_object_list(shared, src=0)
            found = shared[0]
        return found

    def save(self, step: int, state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
        """Write `state` (DCP-able dict) and publish it as `step_<step>`; returns its path.

        Raises CheckpointError (the staging folder removed, earlier checkpoints untouched) when
        the files cannot be written, e.g. on a full disk.
        """
        final = self.directory / f"step_{step}"
        staging = self.directory / f".tmp-step_{step}"
        if self.rank == 0:
            self._remove_leftovers()
            staging.mkdir(parents=True)
        dist.barrier()
        try:
            dcp.save(state, checkpoint_id=str(staging))
            rng_state.save(staging / f"rank_{self.rank}.pt")
        except (Exception, CheckpointException) as exc:  # DCP's error is a BaseException
            full_disk = self._full_disk_note()
            reason = f"{full_disk}; {describe_failure(exc)}" if full_disk else describe_failure(exc)
            if self.rank == 0:
                shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointError(
                f"cannot write checkpoint {staging} ({reason}); "
                f"the earlier checkpoints in {self.directory} are untouched"
            ) from None
        dist.barrier()
        if self.rank == 0:
            self._publish(staging, final, trainer_state)
        dist.barrier()
        return final

    def _publish(self, staging: Path, final: Path, trainer_state: dict[str, Any]) -> None:
        """Manifest, trainer state (last, synced), then the atomic rename; prune after."""
        manifest = {f.name: f.stat().st_size for f in sorted(staging.iterdir())}
        try:
            with open(staging / TRAINER_STATE, "w") as handle:
                json.dump({**trainer_state, MANIFEST: manifest}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointError(f"cannot write checkpoint {staging} ({exc})") from None
        if final.exists():  # re-saving a step after a resume: the old copy goes only after
            old = final.with_name(f".old-{final.name}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        self._prune(final)

    def mark_best(self, step: int, record: dict[str, Any]) -> None:
        """Point `best.json` at the published `step_<step>` (rank 0 writes), with `record`
        (its metrics); the previous best is pruned now if it is outside the kept ones."""
        if self.rank != 0:
            return
        path = self.directory / f"step_{step}"
        write_json_durably(
            self.directory / BEST_POINTER, {"checkpoint": path.name, "step": step, **record}
        )
        self._prune(path)

    def forget_best(self) -> None:
        """Remove `best.json` (rank 0): the run resumed from before its best evaluation."""
        if self.rank == 0:
            (self.directory / BEST_POINTER).unlink(missing_ok=True)

    def load(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load `path` into `state` in place (resharding as needed); returns the trainer state.

        `state` may hold a subset of the checkpoint (e.g. the model without the optimizer).
        Raises CheckpointError, on every rank, when the files cannot be read.
        """
        try:
            safe_dcp.load(state, path)
        except (Exception, CheckpointException) as exc:  # raised on every rank by DCP
            raise CheckpointError(f"cannot load {path} ({describe_failure(exc)})") from None
        problem = None
        rng_file = path / f"rank_{self.rank}.pt"
        if rng_file.is_file():  # absent when resuming on more ranks than wrote the checkpoint
            try:
                rng_state.load(rng_file)
            except rng_state.RngStateError as exc:
                problem = str(exc)
        problems = [p for p in from_every_rank(problem) if p]  # every rank takes the same decision
        if problems:
            raise CheckpointError(f"cannot load {path} ({problems[0]})")
        return read_trainer_state(path)

    def _full_disk_note(self) -> str:
        """A full disk often surfaces as an obscure torch.save error; name it when it is one."""
        free = shutil.disk_usage(self.directory).free
        previous = complete_checkpoints(self.directory)
        needed = sum(f.stat().st_size for f in previous[-1].iterdir()) if previous else 1 << 20
        if free >= needed:
            return ""
        return f"No space left on device: {free:,} bytes free, the last checkpoint took {needed:,}"

    def _remove_leftovers(self) -> None:
        """Staging folders of saves that crashed: they only take disk space."""
        if self.directory.is_dir():
            for child in self.directory.iterdir():
                if _LEFTOVER.match(child.name):
                    shutil.rmtree(child, ignore_errors=True)

    def _prune(self, newest: Path) -> None:
        """Keep the newest `keep` usable checkpoints, always the one just written, and the best
        one (`best.json`) whatever `keep` says."""
        if self.keep is None:
            return
        try:
            best = best_checkpoint(self.directory)
        except CheckpointError as exc:  # never guess which one is the best: keep them all
            log.warning("not pruning old checkpoints: %s", exc)
            return
        for path in complete_checkpoints(self.directory)[: -self.keep]:
            if path not in (newest, best):
                log.info("removing old checkpoint %s (checkpoint_max_to_keep=%d)", path, self.keep)
                shutil.rmtree(path, ignore_errors=True)


def shape_mismatches(
    saved: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]]
) -> list[str]:
    """`key: ...` for each wanted tensor the checkpoint lacks or holds in another shape."""

    def shape(size: tuple[int, ...]) -> str:
        return "x".join(map(str, size)) or "scalar"

    problems = []
    for key, size in wanted.items():
        if key not in saved:
            problems.append(f"{key} is not in the checkpoint")
        elif saved[key] != size:
            problems.append(f"{key} is {shape(saved[key])} there but {shape(size)} here")
    return problems
