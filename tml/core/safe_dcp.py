"""Reading torch.distributed.checkpoint (DCP) folders without running code from their files.

Warm starts read other people's checkpoints, so reading one must not be a way to run code. What
torch 2.13's DCP trusts, and what this module does about it:

* `.metadata` (the index: every tensor's name, shape, dtype and the file ranges of its chunks)
  is read with plain `pickle.load` by `FileSystemReader.read_metadata`: a crafted file runs any
  code. `SafeFileSystemReader` unpickles it with an allow-list of the classes DCP's metadata is
  made of (its dataclasses, `torch.Size`, dtypes, layouts, paths) and refuses anything else; it
  also refuses chunk file names that leave the checkpoint folder.
* Tensor chunks in `__<rank>_<n>.distcp` are read with `torch.load(weights_only=True)`: safe.
* Non-tensor entries are read by `DefaultLoadPlanner.load_bytes` with
  `torch.load(weights_only=False)`: `SafeLoadPlanner` reads them with `weights_only=True`.

What a user still trusts in a checkpoint is its numbers: weights and optimizer state load as
saved, and sizes are believed (a crafted index can ask for a lot of memory). The per-rank RNG
files are plain tensors and numbers (tml.core.rng_state).

`SafeLoadPlanner` also keeps ShardedTensors that have no shard on this rank (a table-wise plan
places each table on one rank). DCP's default planner drops them, then sees checkpoint keys it
lacks, takes the checkpoint for one written before torch 2.4, re-flattens the state the old way,
and an optimizer without state (SGD: `{"state": {table: {}}}`) becomes a key `optim` that no
checkpoint has: "Missing key in checkpoint state_dict: optim."
"""

from __future__ import annotations

import io
import pathlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadPlanner, ReadItem

from tml.core.errors import InputError

_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name)
    for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING",
    )
}  # fmt: skip
_OTHER_CLASSES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,  # name -> layout
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,  # the checkpoint id, informational
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
}
_CHUNK_FILE = re.compile(r"^[\w.-]+$")  # a file in the checkpoint folder itself


class UnsafeCheckpointError(InputError):
    """A checkpoint file asks to run code or to read outside its folder."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES:
            return _METADATA_CLASSES[module, name]
        if (module, name) in _OTHER_CLASSES:
            return _OTHER_CLASSES[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"refusing {module}.{name}: a DCP index holds only DCP metadata classes"
        )


def read_metadata_file(path: Path) -> Metadata:
    """A `.metadata` file, unpickled without running code; UnsafeCheckpointError otherwise."""
    with open(path, "rb") as handle:
        metadata = _MetadataUnpickler(handle).load()
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    for info in (metadata.storage_data or {}).values():
        name = getattr(info, "relative_path", "")
        if not isinstance(name, str) or not _CHUNK_FILE.match(name) or name.startswith(".."):
            raise UnsafeCheckpointError(f"{path} points at a file outside its folder: {name!r}")
    return metadata


class SafeFileSystemReader(dcp.FileSystemReader):
    """DCP's file reader with a `.metadata` that cannot run code."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        metadata = read_metadata_file(Path(self._get_metadata_path(rank)))
        if metadata.storage_meta is None:  # a checkpoint of an older torch
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner, keeping shard-less ShardedTensors and reading bytes without pickle
    code (see the module docstring for both)."""

    def __init__(self) -> None:
        super().__init__(flatten_sharded_tensors=False)

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        plain = torch.load(value, weights_only=True)  # the parent class: weights_only=False
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], plain)
        else:
            self.state_dict[read_item.dest_index.fqn] = plain


def read_metadata(checkpoint: str | Path) -> Metadata:
    """The checkpoint's index (`.metadata`), read without running code."""
    return read_metadata_file(Path(checkpoint) / ".metadata")


def load(
    state: dict[str, Any],
    checkpoint: str | Path,
    *,
    no_dist: bool = False,
    planner: LoadPlanner | None = None,
) -> None:
    """`dcp.load` of `checkpoint` into `state`, reading nothing that can run code."""
    dcp.load(
        state,
        storage_reader=SafeFileSystemReader(str(checkpoint)),
        planner=planner or SafeLoadPlanner(),
        no_dist=no_dist,
    )
