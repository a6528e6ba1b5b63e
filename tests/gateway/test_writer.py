"""A session's writer (gateway/ws/writer.py) on its own: order, the bounded queue, rewind, 4408, timings, the close."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.delivery.tick import SendTicker
from gateway.streams.timings import FIRST_WRITE, WRITES, EventTimings
from gateway.ws.writer import SocketWriter
from shared.schemas.errors import CloseCode
from tests.helpers import eventually


class Transport:
    """The connection under the socket: all the writer does with it is abort it."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class Socket:
    """What the writer uses of a GatewayWebSocket, recorded in order (a real one cannot be made to push
    back on cue): `ready` False is a socket that cannot take a frame at once (paused, compressed), so
    the writer's task sends; `drained` cleared holds that send, as a client that reads nothing does."""

    def __init__(self) -> None:
        self.ready = True
        self.drained = asyncio.Event()
        self.drained.set()
        self.close_fails = False
        self.sending = 0  # sends under way (the writer's task waiting in send_texts)
        self.log: list[tuple[str, Any]] = []  # ("write", [frames]) per write, ("close", code)

    def try_write(self, frame: bytes) -> bool:
        return self.try_write_all([frame])

    def try_write_all(self, frames: list[bytes]) -> bool:
        if not self.ready:
            return False
        self.log.append(("write", list(frames)))
        return True

    async def send_texts(self, frames: list[bytes]) -> None:
        self.sending += 1
        try:
            await self.drained.wait()
        finally:
            self.sending -= 1
        self.log.append(("write", list(frames)))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        if self.close_fails:
            raise ConnectionResetError("the client reads nothing")
        self.log.append(("close", code))
        return True

    @property
    def writes(self) -> list[list[bytes]]:
        return [frames for kind, frames in self.log if kind == "write"]


def event(seq: int) -> bytes:
    return b'{"seq":%d,"user_id":"u1","type":"world_update","changes":[]}' % seq


def answer(msg_id: str) -> bytes:
    return orjson.dumps({"type": "action_response", "id": msg_id, "success": True})


def make_writer(socket: Socket, limit: int = 4, rewind_every_s: float = 10.0, timings: EventTimings | None = None,
                ticker: SendTicker | None = None, transport: Transport | None = None
                ) -> tuple[SocketWriter, list[int]]:
    """A writer on `socket`, and the cursors it asked the stream to rewind to."""
    rewinds: list[int] = []
    writer = SocketWriter(socket, transport, "c1", limit, rewind_every_s,  # type: ignore[arg-type]
                          rewinds.append, timings, ticker)
    return writer, rewinds


async def test_a_frame_for_an_idle_socket_is_written_at_once_without_waiting() -> None:
    socket = Socket()
    writer, _ = make_writer(socket)
    writer.push(event(5))
    writer.send({"type": "pong"})
    assert socket.writes == [[event(5)], [b'{"type":"pong"}']] and len(writer.queue) == 0
    await writer.finish()


async def test_frames_the_socket_cannot_take_now_wait_in_order_and_go_in_one_write() -> None:
    socket = Socket()
    socket.ready = False
    writer, _ = make_writer(socket)
    for frame in (event(5), answer("a"), event(6)):
        writer.push(frame)
    assert socket.writes == []
    await eventually(lambda: socket.writes != [], timeout=2)
    assert socket.writes == [[event(5), answer("a"), event(6)]]
    await writer.finish()


async def test_a_frame_pushed_while_a_send_is_under_way_never_overtakes_it() -> None:
    socket = Socket()
    socket.ready, socket.drained = False, asyncio.Event()
    writer, _ = make_writer(socket)
    writer.push(event(5))
    await eventually(lambda: socket.sending == 1, timeout=2)  # the writer's task is inside its send, the queue empty
    socket.ready = True  # the socket would take a frame at once now
    writer.push(event(6))
    socket.drained.set()
    await eventually(lambda: len(socket.writes) == 2, timeout=2)
    assert socket.writes == [[event(5)], [event(6)]]
    await writer.finish()


@pytest.mark.parametrize("tick", [False, True], ids=["direct", "send_tick"])
@pytest.mark.parametrize("overflow", ["event", "answer"])
async def test_a_full_queue_drops_its_events_keeps_its_answers_and_rewinds_from_the_oldest_dropped(
        tick: bool, overflow: str) -> None:
    socket = Socket()
    socket.ready = False
    writer, rewinds = make_writer(socket, limit=4, ticker=SendTicker(0.01) if tick else None)
    for frame in (event(5), answer("a"), event(6), event(7)):
        writer.push(frame)
    writer.push(event(8) if overflow == "event" else answer("b"))  # the queue is full
    kept = [answer("a")] + ([answer("b")] if overflow == "answer" else [])
    assert rewinds == [4] and writer.queue.frames == kept and writer.server_close is None
    writer.push(event(9))  # room again: the stream reads 5 on, paced, and live traffic goes on meanwhile
    socket.ready = True
    await eventually(lambda: socket.writes != [], timeout=2)
    assert [f for frames in socket.writes for f in frames] == [*kept, event(9)]
    await writer.finish()


async def test_full_again_within_rewind_every_s_closes_4408_and_writes_nothing_more() -> None:
    socket = Socket()
    socket.ready = False
    writer, rewinds = make_writer(socket, limit=2)
    for seq in (1, 2, 3):  # full at 3: rewound
        writer.push(event(seq))
    for seq in (4, 5, 6):  # full again at once
        writer.push(event(seq))
    assert rewinds == [0] and writer.server_close == CloseCode.SLOW_CONSUMER
    writer.push(answer("late"))
    socket.ready = True
    await eventually(lambda: ("close", CloseCode.SLOW_CONSUMER) in socket.log, timeout=2)
    assert socket.writes == [], "a slow consumer's queue is what it cannot take: abandoned, not flushed"
    await writer.finish()


async def test_a_queue_full_of_answers_has_nothing_to_read_again_and_closes_4408() -> None:
    socket = Socket()
    socket.ready = False
    writer, rewinds = make_writer(socket, limit=2)
    for msg_id in "abc":
        writer.push(answer(msg_id))
    assert rewinds == [] and writer.server_close == CloseCode.SLOW_CONSUMER
    await writer.finish()


async def test_once_rewind_every_s_has_passed_a_full_queue_rewinds_again() -> None:
    socket = Socket()
    socket.ready = False
    writer, rewinds = make_writer(socket, limit=2, rewind_every_s=0.0)
    for seq in (1, 2, 3, 4, 5, 6):
        writer.push(event(seq))
    assert rewinds == [0, 3] and writer.server_close is None
    await writer.finish()


async def test_every_written_event_frame_stamps_its_timings_whichever_way_it_is_written() -> None:
    timings = EventTimings()
    for seq in (5, 6, 7, 8):
        timings.received(seq, {"timestamp": 1_000})
    socket = Socket()
    writer, _ = make_writer(socket, timings=timings)
    writer.push(event(5))  # at once
    writer.push(answer("a"))  # no event: no stamp
    socket.ready = False
    writer.push(event(6))  # by the writer's task, in one write
    writer.push(event(7))
    await eventually(lambda: len(socket.writes) == 3, timeout=2)
    ticked, _ = make_writer(Socket(), timings=timings, ticker=SendTicker(0.01))
    ticked.push(event(8))  # by the send tick
    await eventually(lambda: timings.recent(7)[0][1 + WRITES] == 1, timeout=2)
    stamps = {row[0]: row[1:] for row in timings.recent()}
    assert all(stamps[seq][FIRST_WRITE] > 0 and stamps[seq][WRITES] == 1 for seq in (5, 6, 7, 8)), stamps
    await writer.finish()
    await ticked.finish()


async def test_with_a_send_tick_frames_wait_for_the_tick_and_go_in_one_write() -> None:
    socket = Socket()
    writer, _ = make_writer(socket, ticker=SendTicker(0.02))
    for frame in (event(5), answer("a"), event(6)):
        writer.push(frame)
    assert socket.writes == [], "nothing is written before the tick, even to an idle socket"
    await eventually(lambda: socket.writes != [], timeout=2)
    assert socket.writes == [[event(5), answer("a"), event(6)]]
    await writer.finish()


async def test_a_close_with_flush_sends_what_was_queued_first_and_nothing_after() -> None:
    socket = Socket()
    socket.ready = False
    writer, _ = make_writer(socket)
    writer.push(answer("a"))
    writer.send({"type": "error", "code": "too_many_sessions"})
    writer.close_soon(CloseCode.TOO_MANY_SESSIONS, "too many sessions", flush=True)
    writer.push(answer("after"))  # the close is decided: ignored
    await eventually(lambda: any(kind == "close" for kind, _ in socket.log), timeout=2)
    assert socket.log == [("write", [answer("a"), b'{"type":"error","code":"too_many_sessions"}']),
                          ("close", CloseCode.TOO_MANY_SESSIONS)]
    await writer.finish()


async def test_a_close_the_socket_cannot_take_aborts_the_connection() -> None:
    socket, transport = Socket(), Transport()
    socket.close_fails = True
    writer, _ = make_writer(socket, transport=transport)
    writer.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")
    await eventually(lambda: transport.aborted, timeout=2)
    await writer.finish()


async def test_finish_ends_a_send_the_client_never_takes() -> None:
    socket = Socket()
    socket.ready, socket.drained = False, asyncio.Event()
    writer, _ = make_writer(socket)
    writer.push(event(5))
    await eventually(lambda: socket.sending == 1, timeout=2)  # stuck in its send
    await asyncio.wait_for(writer.finish(), timeout=2)
    assert socket.log == [("close", 1000)]
