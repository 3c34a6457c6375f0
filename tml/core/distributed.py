"""Process-group setup and teardown for torchrun-launched jobs, on CPU (gloo) or GPU (nccl).

The device and backend come from the machine: CUDA with nccl when a GPU is visible, else CPU with
gloo. The same code runs without torchrun (world size 1, a private local rendezvous).
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# Exit code of a worker that met a bad input (config, data, save dir, checkpoint): one `error:`
# line, and no restart, since a restarted worker would meet the same input (tml.core.launch).
INPUT_ERROR = 2


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job and what it computes on."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def configure_threads(threads_per_rank: int | None, local_world_size: int) -> None:
    """Threads per rank: by default the cores split evenly between the ranks of this machine.

    (OMP_WAIT_POLICY=PASSIVE, the other half of avoiding the OpenMP spin slowdown that made
    small CPU boxes 10-40x slower, must be in the environment before torch loads: run.py sets
    it; docs/stack.md.)
    """
    if threads_per_rank is None:
        threads_per_rank = max(1, (os.cpu_count() or 1) // max(local_world_size, 1))
    torch.set_num_threads(threads_per_rank)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(timeout_s: int = 600) -> DistributedContext:
    """Start the default process group from torchrun's environment (or as a lone process)."""
    if "RANK" not in os.environ:  # plain `python run.py`: a one-process job
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
        )  # fmt: skip
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank, world_size, local_rank, local_world_size, device)


def shutdown() -> None:
    """End the process group without gloo's SIGABRT at interpreter exit (docs/stack.md).

    DMP and its sharding env keep gloo work objects alive until finalization, where their
    destructors abort the process. Call this once the model and pipeline are out of scope:
    collecting them first, then a barrier, then destroy is clean.
    """
    gc.collect()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abort_job(message: str, exit_code: int = 1) -> NoReturn:
    """Print one error line and leave at once, so torchrun stops the other ranks.

    A normal exception exit would run teardown that waits on the other ranks forever (e.g. the
    planner raises on rank 0 only while the others block in a broadcast).
    """
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    exit_process(exit_code)


def exit_process(exit_code: int) -> NoReturn:
    """Leave now, without the interpreter's teardown of torch and TorchRec (about 1 s per rank,
    a fixed cost on every run). Only call it once every output file is closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
