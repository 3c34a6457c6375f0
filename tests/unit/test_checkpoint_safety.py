"""Loading a checkpoint never runs code from its files (tml.core.safe_dcp, tml.core.rng_state).

Each crafted file below would create a file when unpickled the way torch.load(weights_only=False)
or pickle.load do; loading must refuse it and leave that file uncreated.
"""

from __future__ import annotations

import builtins
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from tml.core import rng_state, safe_dcp
from tml.core.checkpoint import (
    MANIFEST,
    TRAINER_STATE,
    CheckpointError,
    CheckpointManager,
    saved_shapes,
)


class CreatesAFile:
    """Unpickled by a trusting loader, this opens (creates) `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return builtins.open, (str(self.path), "w")


def write_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A one-rank checkpoint as CheckpointManager publishes it; the state it holds."""
    state = {"model": {"weight": torch.arange(12.0).reshape(3, 4)}}
    dcp.save(state, checkpoint_id=str(path), no_dist=True)
    rng_state.save(path / "rank_0.pt")
    manifest = {f.name: f.stat().st_size for f in sorted(path.iterdir())}
    (path / TRAINER_STATE).write_text(json.dumps({"step": 1, MANIFEST: manifest}))
    return state


def plant(path: Path, payload: object) -> None:
    """Replace `path` by a pickle of `payload`, padded to its size (the manifest still holds)."""
    data = pickle.dumps(payload, protocol=2)
    size = path.stat().st_size
    assert len(data) < size
    path.write_bytes(data + b" " * (size - len(data)))


def test_a_crafted_rank_pt_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    checkpoint, marker = tmp_path / "checkpoints" / "step_1", tmp_path / "ran"
    state = write_checkpoint(checkpoint)
    plant(checkpoint / "rank_0.pt", CreatesAFile(marker))
    with pytest.raises(CheckpointError) as error:
        CheckpointManager(tmp_path / "checkpoints", keep=None, rank=0).load(checkpoint, state)
    assert "rank_0.pt holds objects other than tensors and numbers" in str(error.value)
    assert not marker.exists()


def test_a_crafted_metadata_file_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    checkpoint, marker = tmp_path / "step_1", tmp_path / "ran"
    state = write_checkpoint(checkpoint)
    plant(checkpoint / ".metadata", CreatesAFile(marker))
    with pytest.raises(CheckpointError, match=r"\.metadata is refused: refusing io\.open"):
        saved_shapes(checkpoint)
    with pytest.raises(CheckpointException, match="refusing io.open"):
        safe_dcp.load(state, checkpoint, no_dist=True)
    assert not marker.exists()


def test_a_metadata_file_pointing_outside_its_folder_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "step_1"
    write_checkpoint(checkpoint)
    metadata = safe_dcp.read_metadata(checkpoint)
    for info in metadata.storage_data.values():
        info.relative_path = "../../etc/passwd"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(safe_dcp.UnsafeCheckpointError, match="outside its folder"):
        safe_dcp.read_metadata(checkpoint)


def test_non_tensor_entries_load_without_running_code(tmp_path: Path) -> None:
    plain, crafted, marker = tmp_path / "plain", tmp_path / "crafted", tmp_path / "ran"
    dcp.save({"notes": {"epoch": 3, "name": "run"}}, checkpoint_id=str(plain), no_dist=True)
    loaded = {"notes": {"epoch": 0, "name": ""}}
    safe_dcp.load(loaded, plain, no_dist=True)
    assert loaded == {"notes": {"epoch": 3, "name": "run"}}
    dcp.save({"notes": CreatesAFile(marker)}, checkpoint_id=str(crafted), no_dist=True)
    assert not marker.exists()
    with pytest.raises(CheckpointException, match="Weights only load failed"):
        safe_dcp.load({"notes": None}, crafted, no_dist=True)
    assert not marker.exists()


def test_rng_state_round_trips_and_files_of_earlier_versions_still_load(tmp_path: Path) -> None:
    random.random(), np.random.randn()  # numpy caches a gaussian: part of the state
    rng_state.save(tmp_path / "rank_0.pt")
    draws = (random.random(), np.random.randn(), np.random.rand(), torch.rand(2).tolist())
    rng_state.load(tmp_path / "rank_0.pt")
    assert (random.random(), np.random.randn(), np.random.rand(), torch.rand(2).tolist()) == draws
    earlier = {  # what earlier versions saved: the generators' own tuples, a numpy array inside
        "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()
    }  # fmt: skip
    torch.save(earlier, tmp_path / "rank_1.pt")
    draws = (random.random(), np.random.rand(), torch.rand(2).tolist())
    rng_state.load(tmp_path / "rank_1.pt")
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == draws
