"""Model slots over the workers of one host (a shared file, a row per worker) and the queue in front of them."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.slots import HostSlots, ModelQueue


def test_the_caps_count_over_every_worker_and_a_restarted_worker_frees_its_slots(tmp_path: Path) -> None:
    path = str(tmp_path / "slots")
    first, second = (HostSlots(3, 2, path, workers=2, index=i) for i in (0, 1))
    assert first.take("alice") is None and second.take("alice") is None
    assert first.take("alice") == "user"  # her share, over both workers
    assert second.take("bob") is None and first.take("carol") == "host"  # the host's 3, over both
    assert first.in_flight() == second.in_flight() == 3 and first.mine() == 1 and second.mine() == 2
    second.close()
    again = HostSlots(3, 2, path, workers=2, index=1)  # worker 1 died and started again: its slots are free
    assert again.in_flight() == 1 and again.take("carol") is None
    first.give_back("alice")
    assert again.in_flight() == 1
    first.close()
    again.close()


async def test_a_request_waits_for_a_freed_slot_within_its_deadline() -> None:
    registry = CollectorRegistry()
    queue = ModelQueue(HostSlots(1, 1), NarratorMetrics(registry))
    assert await queue.acquire("alice", time.perf_counter() + 5) is None
    waiting = asyncio.create_task(queue.acquire("bob", time.perf_counter() + 5))
    await asyncio.sleep(0.1)
    assert not waiting.done() and registry.get_sample_value("gaia_gateway_narrator_requests_queued") == 1
    queue.release("alice")
    assert await waiting is None
    assert registry.get_sample_value("gaia_gateway_narrator_requests_queued") == 0
    assert registry.get_sample_value("gaia_gateway_narrator_queue_seconds_count") == 1


async def test_a_request_that_cannot_be_served_in_time_is_busy_at_once() -> None:
    queue = ModelQueue(HostSlots(1, 2))
    assert await queue.acquire("alice", time.perf_counter() + 5) is None
    started = time.perf_counter()
    assert await queue.acquire("bob", time.perf_counter() + 0.3) == "host"  # 0.5 s to a first token: no time
    assert time.perf_counter() - started < 0.05
    queue.hold_s = 10.0  # slots are held 10 s: a 5 s deadline cannot be met behind one
    assert await queue.acquire("carol", time.perf_counter() + 5) == "host"
    assert time.perf_counter() - started < 0.1
    shares = ModelQueue(HostSlots(5, 1))
    assert await shares.acquire("alice", time.perf_counter() + 5) is None
    assert await shares.acquire("alice", time.perf_counter() + 5) == "user"  # her share is in use: no waiting
