"""Restarted workers find each other in torchrun's shared store (tml.core.attempt_store).

torch 2.13's torchrun keeps one store for every attempt of a job, so the ranks of an attempt must
agree on a key space the previous attempt did not use, whatever order they start in. Real
TCPStore clients, one thread per rank; the whole-job restart is in tests/distributed/test_fault_tolerance.py.
"""

from __future__ import annotations

import datetime
import threading
import time

import torch.distributed as dist

from tml.core.attempt_store import attempt_prefix_store

TIMEOUT = datetime.timedelta(seconds=30)


def run_attempt(port: int, attempt: int, delays: list[float]) -> dict[int, dict[int, str]]:
    """Ranks starting after `delays`; what each one reads from every rank's key."""
    seen: dict[int, dict[int, str]] = {}

    def rank(r: int) -> None:
        time.sleep(delays[r])
        client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=TIMEOUT)
        store = attempt_prefix_store(client, r, len(delays), TIMEOUT)
        store.set(f"address/{r}", f"attempt {attempt}")  # what a process group would publish
        seen[r] = {peer: store.get(f"address/{peer}").decode() for peer in range(len(delays))}

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(delays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return seen


def test_each_attempt_sees_only_its_own_ranks_whatever_order_they_start_in() -> None:
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
    # Rank 0 last in the second attempt: the others first find the first attempt's leader.
    for attempt, delays in enumerate([[0.3, 0.0, 0.1], [1.5, 0.0, 0.2], [0.0, 0.4, 0.0]]):
        seen = run_attempt(server.port, attempt, delays)
        assert seen == {r: {peer: f"attempt {attempt}" for peer in range(3)} for r in range(3)}
