"""The delivery state machines on their own: the snapshot gate, the send queue, the stream's splice and
rewind, the token buckets (end-to-end tests cover them only through a whole gateway)."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.delivery.gate import SnapshotGate
from gateway.delivery.sendqueue import SendQueue
from gateway.edge import buckets
from gateway.edge.buckets import KeyedBuckets, TokenBucket
from gateway.streams.reads import StreamReads
from gateway.streams.stream import ConnectionStream
from shared.config import Settings
from shared.natsconn import NatsLink
from tests.test_schemas import EVENT


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


class Sink:
    """What the stream hands on, in order."""

    transport = "websocket"

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.replayed: list[tuple[int, int, int]] = []

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        self.seqs.append(seq)

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        self.replayed.append((from_seq, to_seq, replayed))

    def on_resync(self, reason: str) -> None:
        raise AssertionError(reason)

    def on_stalled(self) -> None:
        raise AssertionError("stalled")

    def room(self) -> int:
        return 100


def payload() -> bytes:
    return orjson.dumps({**{k: v for k, v in EVENT.items() if k != "user_id"}, "audience": [None, None]})


@pytest.fixture
def stream() -> ConnectionStream:
    reads = StreamReads(NatsLink(Settings(), "units"), Settings())
    return ConnectionStream(reads, "u1", "exp", "c1", Sink())


async def test_splice_goes_live_when_held_messages_chain_from_the_cursor(stream: ConnectionStream) -> None:
    stream.cursor = 10
    stream._held = [(9, 8, payload()), (11, 10, payload()), (12, 11, payload())]
    assert stream._splice()
    assert stream.sink.seqs == [11, 12] and stream.cursor == 12 and stream._held is None


async def test_splice_refuses_a_hole_and_holds_anew_for_the_catch_up(stream: ConnectionStream) -> None:
    stream.cursor = 10
    stream._held = [(11, 10, payload()), (13, 12, payload())]  # 12 is missing
    assert not stream._splice()
    assert stream.sink.seqs == [11] and stream.cursor == 11 and stream._held == []


async def test_splice_after_held_messages_were_dropped_never_goes_live(stream: ConnectionStream) -> None:
    stream.cursor = 10
    stream._held, stream._held_dropped = [(11, 10, payload())], True
    assert not stream._splice()
    assert stream.sink.seqs == [] and stream._held == []


async def test_live_message_with_a_gap_starts_a_catch_up_and_rewind_moves_the_cursor_back(
        stream: ConnectionStream) -> None:
    class Msg:
        """The stream's republish of one stored message, as nats-py hands it over."""

        def __init__(self, seq: int, last: int) -> None:
            self.subject = "live." + stream.subject
            self.headers = {"Nats-Stream": stream.reads.settings.stream_name, "Nats-Subject": stream.subject,
                            "Nats-Sequence": str(seq), "Nats-Last-Sequence": str(last)}
            self.data = payload()

    stream.cursor, stream._held = 10, None
    stream._on_live(Msg(11, 10))
    stream._on_live(Msg(11, 10))  # a duplicate is dropped
    assert stream.sink.seqs == [11]
    stream._on_live(Msg(14, 13))  # 12 and 13 missed: held, and a catch-up starts
    assert stream.catching_up and stream._held == [(14, 13, payload())]
    stream.rewind(5)
    assert stream.cursor == 5 and stream._held == [] and stream._rewinds == 1
    await stream.close()
    assert not stream.catching_up


def test_token_bucket_allows_its_burst_then_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(buckets.time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2/s
    assert [bucket.allow() for _ in range(2)] == [True, False]
    now[0] += 60  # never more than the burst
    assert sum(bucket.allow() for _ in range(10)) == 3


def test_keyed_buckets_keep_keys_apart_and_forget_the_oldest_past_the_bound() -> None:
    keyed = KeyedBuckets(rate=0.001, burst=1, max_keys=2)
    assert keyed.allow("a") and not keyed.allow("a")
    assert keyed.allow("b") and keyed.allow("c")  # "a" forgotten: a full bucket again
    assert keyed.allow("a")


async def test_event_timings_stamp_a_run_of_copies_once_when_the_loop_turn_ends() -> None:
    from gateway.streams.timings import FIRST_WRITE, LAST_WRITE, WRITES, EventTimings

    timings = EventTimings()
    for seq in (7, 8):
        timings.received(seq, {"timestamp": 1_000})
    frame = {seq: b'{"seq":%d,"user_id":"u","type":"world_update"}' % seq for seq in (7, 8)}
    for _ in range(3):  # three sockets take event 7, then two take event 8, in one turn
        timings.wrote(frame[7])
    timings.wrote(b'{"type":"action_response"}')  # not an event: no stamp
    timings.wrote(frame[8])
    timings.wrote(frame[8])
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert stamps[7][WRITES] == 3 and stamps[7][LAST_WRITE] >= stamps[7][FIRST_WRITE] > 0
    assert stamps[8][WRITES] == 0 and stamps[8][FIRST_WRITE] > 0  # its run is still being written
    await asyncio.sleep(0)  # the turn ends
    await asyncio.sleep(0)
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert stamps[8][WRITES] == 2 and stamps[8][LAST_WRITE] >= stamps[8][FIRST_WRITE]
    timings.wrote_all([frame[7], frame[8]])  # a send tick's one write: both events at one instant
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert (stamps[7][WRITES], stamps[8][WRITES]) == (4, 3) and stamps[7][LAST_WRITE] == stamps[8][LAST_WRITE]


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
