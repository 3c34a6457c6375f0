"""A fresh key space in torchrun's shared store for each attempt, so restarted workers connect.

torch 2.13's torchrun hosts one TCPStore in its agent and hands it to every attempt of the job
(TORCHELASTIC_USE_AGENT_STORE=True). The process group keeps its peers' addresses in that store
under fixed keys, so workers restarted after a crash read the previous attempt's addresses (gloo:
"connectFullMesh failed ... Connection refused"; NCCL: a stale unique id) and the restart fails.
TORCHELASTIC_RESTART_COUNT cannot name the attempt: each node's agent counts its own restarts,
and a node restarted because another one failed does not count (pytorch/pytorch#135712).

So the ranks of an attempt agree on a key prefix through the store itself: rank 0 publishes a
new random id as the leader, each other rank answers under that id with an id of its own, and
rank 0 welcomes each answer back. A rank that read a leader of an earlier attempt (that leader
is dead, since torchrun stops every worker before it starts the next attempt) gets no welcome
with its own id, reads the leader again and answers the new one.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid

import torch.distributed as dist

ROOT = "tml/attempt"
LEADER_KEY = f"{ROOT}/leader"
RETRY = datetime.timedelta(seconds=1)


def shares_agent_store() -> bool:
    """Whether torchrun wants its workers to use the agent's store (the torch >= 2.4 default)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


def agent_store(timeout: datetime.timedelta) -> dist.Store:
    """A client of the store torchrun's agent hosts at MASTER_ADDR:MASTER_PORT."""
    return dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ["MASTER_PORT"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timeout,
    )


def attempt_prefix_store(
    store: dist.Store, rank: int, world_size: int, timeout: datetime.timedelta
) -> dist.PrefixStore:
    """`store` seen under a prefix that only the ranks of this attempt share."""
    me = uuid.uuid4().hex
    if rank == 0:
        store.set(LEADER_KEY, me)
        if world_size > 1:
            store.wait([f"{ROOT}/{me}/join/{peer}" for peer in range(1, world_size)], timeout)
        for peer in range(1, world_size):
            store.set(f"{ROOT}/{me}/welcome/{peer}", store.get(f"{ROOT}/{me}/join/{peer}").decode())
        return dist.PrefixStore(f"{ROOT}/{me}/", store)
    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        store.wait([LEADER_KEY], timeout)
        leader = store.get(LEADER_KEY).decode()
        store.set(f"{ROOT}/{leader}/join/{rank}", me)
        welcome = f"{ROOT}/{leader}/welcome/{rank}"
        try:
            store.wait([welcome], RETRY)
        except dist.DistStoreError:  # no welcome yet: a slow leader, or one of an old attempt
            continue
        if store.get(welcome).decode() == me:
            return dist.PrefixStore(f"{ROOT}/{leader}/", store)
        time.sleep(
            RETRY.total_seconds() / 10
        )  # an earlier attempt's welcome: wait for the new leader
    raise dist.DistStoreError(
        f"rank {rank}: no rank 0 of this attempt answered in the store within {timeout}"
    )
