"""A connection's stream (gateway/streams/stream.py) on its own: the splice from catch-up to live, and rewind."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.streams.reads import StreamReads
from gateway.streams.stream import ConnectionStream
from shared.config import Settings
from shared.natsconn import NatsLink
from tests.helpers import EVENT


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
