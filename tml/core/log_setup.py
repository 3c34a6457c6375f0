"""Logging for multi-rank jobs: rank 0 talks, other ranks only warn; TorchRec's noise is muted."""

from __future__ import annotations

import logging
import sys
import warnings

# Messages TorchRec and torch print on every run that say nothing about this run (docs/stack.md).
_KNOWN_NOISE = (
    "The topology was constructed directly",
    "HeuristicalStorageReservation",
    "There is a known issue with TorchRec's dense tensor size",
    "is_fx_tracing will return true",
    "Please use DTensor instead and we are deprecating ShardedTensor",
    "torch.distributed._shard.sharded_tensor will be deprecated",
    "TypedStorage is deprecated",
    "is deprecated. Please use",  # torch's own collectives used inside TorchRec
    "torch.distributed is disabled, unavailable or uninitialized",  # offline DCP export
    "torch._prims_common.check` is deprecated",  # inductor's own lowering (model.compile)
)


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in _KNOWN_NOISE)


def setup_logging(rank: int) -> None:
    """Lines stamped to the millisecond and tagged with the rank; INFO on rank 0, WARNING elsewhere."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s.%(msecs)03d [rank{rank}] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"
        )
    )
    handler.addFilter(_DropKnownNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tml").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    for noisy in ("torchrec", "torch.distributed", "torch.fx", "fbgemm_gpu"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for noise in _KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=f".*{noise}.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchrec")
    warnings.filterwarnings("ignore", category=UserWarning, module="torchrec")
