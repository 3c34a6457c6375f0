"""A process's random number generator state as plain tensors and numbers, safe to load.

The state of torch's, numpy's and Python's generators is saved with `torch.save` as a dict of
tensors, ints, floats and strings only, and read back with `torch.load(weights_only=True)`, which
builds nothing else: a crafted file cannot run code (`weights_only=False` would unpickle
anything). A file that is not such a dict is refused with RngStateError. Files of earlier
versions (numpy's state as an array) still load: numpy arrays are allowed too, which builds
arrays and nothing else.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct

PYTHON_STATE_WORDS = 625  # MT19937: 624 words and the position
# What a numpy array in a pickle refers to (earlier versions saved numpy's state as one).
_NUMPY_ARRAY_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    _reconstruct,
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
]


class RngStateError(ValueError):
    """An RNG state file that cannot be restored; the message names the file."""


def capture() -> dict[str, Any]:
    """This process's generator states, as plain values."""
    legacy = np.random.get_state(legacy=True)  # the tuple form (a dict for other generators)
    assert isinstance(legacy, tuple), "numpy's global generator is MT19937"
    algorithm, keys, pos, has_gauss, cached_gaussian = legacy
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore(state: dict[str, Any]) -> None:
    """Set the generators to a `capture()`d state."""
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, tuple):  # an earlier version's file: the generators' own tuples
        numpy_state = dict(zip(("algorithm", "keys", "pos", "has_gauss", "cached_gaussian"),
                               numpy_state, strict=True))  # fmt: skip
        numpy_state["keys"] = torch.from_numpy(numpy_state["keys"].astype(np.int64))
        version, words, gauss_next = python_state
        python_state = {"version": version, "words": torch.tensor(words), "gauss_next": gauss_next}
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            numpy_state["algorithm"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    words = python_state["words"].tolist()
    if len(words) != PYTHON_STATE_WORDS:
        raise ValueError(f"python state has {len(words)} words, not {PYTHON_STATE_WORDS}")
    random.setstate((python_state["version"], tuple(words), python_state["gauss_next"]))


def save(path: Path) -> None:
    torch.save(capture(), path)


def load(path: Path) -> None:
    """Restore the generators from `path`; RngStateError if it is not a saved RNG state."""
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise RngStateError(
            f"{path} holds objects other than tensors and numbers; refused, since loading a "
            "checkpoint never runs code from it"
        ) from None
    except Exception as exc:
        raise RngStateError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        restore(state)
    except Exception as exc:  # wrong keys, types or sizes
        raise RngStateError(
            f"{path} is not an RNG state of this version ({type(exc).__name__}: {exc})"
        ) from None
