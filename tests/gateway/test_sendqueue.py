"""The session's send queue (gateway/delivery/sendqueue.py): bounded, handed on in order, dropped by choice."""
from __future__ import annotations

import asyncio

from gateway.delivery.sendqueue import SendQueue


async def test_send_queue_is_bounded_and_hands_the_writer_everything_waiting_in_order() -> None:
    queue: SendQueue[str] = SendQueue(3)
    assert [queue.put(x) for x in "abcd"] == [True, True, True, False]
    assert await queue.take() == ["a", "b", "c"] and len(queue) == 0
    taker = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert queue.writer_idle
    queue.put("e")
    assert await taker == ["e"] and not queue.writer_idle


async def test_send_queue_drops_only_what_is_picked() -> None:
    queue: SendQueue[str] = SendQueue(5)
    for frame in ("ev1", "answer", "ev2"):
        queue.put(frame)
    assert queue.drop(lambda frame: frame.startswith("ev")) == 2
    assert queue.frames == ["answer"]
