"""The lightest core subscription: delivered in the read loop's turn, gone on unsubscribe, back after a reconnect."""
from __future__ import annotations

import asyncio
from typing import Any

import nats

from gateway.streams.natssub import subscribe_direct
from tests.helpers import eventually


async def test_a_direct_subscription_delivers_in_order_with_no_task_and_stops_on_unsubscribe(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url_as("operator"))
    got: list[bytes] = []
    tasks_before = len(asyncio.all_tasks())
    sub = await subscribe_direct(nc, "t.direct", lambda msg: got.append(msg.data))
    assert len(asyncio.all_tasks()) == tasks_before  # nats-py's own would start a task per subscription
    for i in range(100):
        await nc.publish("t.direct", str(i).encode())
    await nc.flush()
    await eventually(lambda: len(got) == 100)
    assert got == [str(i).encode() for i in range(100)] and sub.pending_msgs == 0
    await sub.unsubscribe()
    # A witness subscribed after the UNSUB on the same connection: the server handles both in order,
    # so once the witness has "after", the removed subscription would have had it too.
    witness = asyncio.get_running_loop().create_future()
    await subscribe_direct(nc, "t.direct", lambda msg: witness.done() or witness.set_result(msg.data))
    await nc.publish("t.direct", b"after")
    await nc.flush()
    assert await asyncio.wait_for(witness, 10) == b"after"
    assert got[-1] == b"99" and len(got) == 100
    await nc.drain()


async def test_a_failing_handler_is_logged_and_the_connection_keeps_delivering(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url_as("operator"))
    got: list[bytes] = []

    def handler(msg: Any) -> None:
        if msg.data == b"bad":
            raise ValueError("bad message")
        got.append(msg.data)
    await subscribe_direct(nc, "t.fail", handler)
    for data in (b"a", b"bad", b"b"):
        await nc.publish("t.fail", data)
    await nc.flush()
    await eventually(lambda: got == [b"a", b"b"])
    assert nc.is_connected
    await nc.close()


async def test_a_direct_subscription_is_made_again_after_a_nats_restart(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url_as("operator"), reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    got: list[bytes] = []
    await subscribe_direct(nc, "t.again", lambda msg: got.append(msg.data))
    nats_server.kill()
    nats_server.start()
    await eventually(lambda: nc.is_connected, timeout=15)
    other = await nats.connect(nats_server.url_as("operator"))

    async def arrives() -> bool:
        await other.publish("t.again", b"back")
        await other.flush()
        await asyncio.sleep(0.05)
        return b"back" in got
    await eventually(arrives, timeout=15)
    await other.close()
    await nc.close()
