"""The snapshot gate (gateway/delivery/gate.py) on its own: events pass at once, wait behind a snapshot in order,
and a stream client holds them from the stream's open until its snapshot is sent."""
from __future__ import annotations

import asyncio
from typing import Any

from gateway.delivery.gate import SnapshotGate


class OneView:
    """kb's snapshot answer for the gate: the test decides when it arrives (kb's HTTP is not the subject)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.asked = asyncio.Event()
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def state(self, experience: str, user_id: str, label: str, gateway_id: str) -> dict[str, Any]:
        self.asked.set()
        await self.answer
        return {"type": "area_of_interest", "snapshot_version": self.version}


def new_gate(kb: Any, out: list[Any], limit: int = 4, overflow: Any = None) -> SnapshotGate[Any]:
    return SnapshotGate(kb, "exp", "u1", "c1", "gw", limit, emit_event=out.append,
                        emit_frame=lambda frame: out.append(frame["type"]),
                        on_overflow=overflow or (lambda dropped: True))


def world_update(version: int) -> dict[str, Any]:
    return {"type": "world_update", "snapshot_version": version}


async def test_gate_passes_events_at_once_and_holds_them_behind_a_snapshot_in_order() -> None:
    out: list[Any] = []
    kb = OneView(version=5)
    gate = new_gate(kb, out)
    gate.event("e4", world_update(4))
    fetch = asyncio.create_task(gate.send_view())
    await kb.asked.wait()
    gate.event("e5", world_update(5))
    gate.in_order("answer")
    assert out == ["e4"] and gate.held == 2
    kb.answer.set_result(None)
    await fetch
    assert out == ["e4", "area_of_interest", "e5", "answer"] and gate.held == 0


async def test_gate_nested_holds_release_only_when_the_last_ends() -> None:
    out: list[Any] = []
    gate = new_gate(None, out)
    with gate.holding():
        with gate.holding():
            gate.event("e1", world_update(1))
        assert out == []
    assert out == ["e1"]


async def test_gate_overflow_drops_held_events_for_a_reread_and_keeps_answers() -> None:
    out: list[Any] = []
    dropped_seen: list[list[Any]] = []
    gate = new_gate(None, out, limit=2, overflow=lambda dropped: dropped_seen.append(dropped) or True)
    with gate.holding():
        gate.event("e1", world_update(1))
        gate.in_order("answer")
        gate.event("e2", world_update(2))  # the third item: over the bound
    assert dropped_seen == [["e1", "e2"]]
    assert out == ["answer"]


async def test_gate_resync_says_so_before_the_snapshot_and_holds_events_meanwhile() -> None:
    out: list[Any] = []
    kb = OneView(version=9)
    gate = new_gate(kb, out)
    view = gate.resync("too far behind")
    gate.event("e9", world_update(9))  # arrives before the snapshot is even asked for
    assert out == ["resync_required"]
    kb.answer.set_result(None)
    await view
    assert out == ["resync_required", "area_of_interest", "e9"]


async def test_gate_reached_waits_for_the_version_and_times_out_without_it() -> None:
    gate = new_gate(None, [])
    waiting = asyncio.create_task(gate.reached(3, timeout=5))
    await asyncio.sleep(0)
    gate.event("e3", world_update(3))
    assert await waiting
    assert not await gate.reached(4, timeout=0.01)


async def test_an_event_that_arrives_while_the_stream_opens_follows_the_fresh_snapshot() -> None:
    """The stream reads the subject's end, and a message stored just after it arrives before the answer:
    it is delivered when the stream goes live, and must still reach the client after the snapshot."""
    from gateway.delivery.client import StreamClient
    from gateway.streams.sink import OpenResult

    out: list[Any] = []
    kb = OneView(version=8)
    kb.answer.set_result(None)

    class Opening:
        label = "c1"

        async def open(self, after_seq: int | None) -> OpenResult:
            client.gate.event("e8", world_update(8))  # the splice delivers it as the stream goes live
            return OpenResult("live", 7, 7)

    class Client(StreamClient[Any]):
        pass
    client = Client()
    client.gate, client.stream = new_gate(kb, out), Opening()  # type: ignore[assignment]
    client.conn_id = "c1"
    await client.open_with_snapshot()
    assert out == ["area_of_interest", "e8"]
