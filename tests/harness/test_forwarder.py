"""The benchmark's floor (harness/bench/floors/forwarder.py): every message to every socket in order, with a tick or not."""
from __future__ import annotations

from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from gateway.delivery.tick import SendTicker
from gateway.streams.natscopies import CopyParser
from harness.bench.floors.forwarder import NC, ForwardedSocket, create_app


class RecordingSocket:
    """Stands in for the socket: records each write (a list of frames) and whether it took them."""

    def __init__(self, takes: bool = True) -> None:
        self.takes = takes
        self.writes: list[list[bytes]] = []

    def try_write(self, frame: bytes) -> bool:
        if self.takes:
            self.writes.append([frame])
        return self.takes

    def try_write_all(self, frames: list[bytes]) -> bool:
        if self.takes:
            self.writes.append(list(frames))
        return self.takes

    async def send_texts(self, frames: list[bytes]) -> None:
        self.writes.append(list(frames))


def message(data: bytes) -> Msg:
    return Msg(_client=None, subject="s", data=data)  # type: ignore[arg-type]


async def test_with_a_tick_a_sockets_messages_wait_for_the_tick_and_go_in_one_write() -> None:
    ticker = SendTicker(3600)  # never fires by itself: the test ends the tick
    ws = RecordingSocket()
    forwarded = ForwardedSocket(ws, ticker)  # type: ignore[arg-type]
    for i in range(5):
        forwarded.forward(message(b"%d" % i))
    assert ws.writes == []
    ticker.flush()
    assert ws.writes == [[b"0", b"1", b"2", b"3", b"4"]]


async def test_without_a_tick_each_message_is_one_write() -> None:
    ws = RecordingSocket()
    forwarded = ForwardedSocket(ws, None)  # type: ignore[arg-type]
    for i in range(3):
        forwarded.forward(message(b"%d" % i))
    assert ws.writes == [[b"0"], [b"1"], [b"2"]]


async def test_a_socket_that_pushes_back_at_the_tick_gets_its_frames_in_order_from_the_drainer() -> None:
    ticker = SendTicker(3600)
    ws = RecordingSocket(takes=False)
    forwarded = ForwardedSocket(ws, ticker)  # type: ignore[arg-type]
    forwarded.forward(message(b"a"))
    ticker.flush()
    forwarded.forward(message(b"b"))  # the drainer is under way: it takes this one too
    assert forwarded.drainer is not None
    await forwarded.drainer
    assert [frame for write in ws.writes for frame in write] == [b"a", b"b"]


def test_an_unknown_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="parser"):
        create_app("nats://127.0.0.1:1", 0, "regex")


@pytest.mark.parametrize("tick_ms,parser", [(0, "copies"), (20, "copies"), (0, "nats-py")])
async def test_every_socket_gets_every_message_in_order(aiohttp_client: Any, nats_server: Any, tick_ms: int,
                                                        parser: str) -> None:
    client = await aiohttp_client(create_app(nats_server.url_as("operator"), tick_ms, parser))
    sockets = []
    for _ in range(3):
        ws = await client.ws_connect("/ws?subject=floor.test")
        assert (await ws.receive_str(timeout=10)) == "ready"
        sockets.append(ws)
    publisher = await nats.connect(nats_server.url_as("operator"))
    try:
        for i in range(200):
            await publisher.publish("floor.test", b"%d" % i)
        await publisher.flush()
    finally:
        await publisher.close()
    for ws in sockets:
        got = [await ws.receive(timeout=10) for _ in range(200)]
        assert [m.data for m in got] == [str(i) for i in range(200)]
        assert all(m.type == aiohttp.WSMsgType.TEXT for m in got)
        await ws.close()
    reader = client.app[NC]._ps
    if parser == "copies":  # the floor reads as the gateway does: each message in full once, its copies in place
        assert isinstance(reader, CopyParser) and reader.copies == 200 * 2
    else:
        assert not isinstance(reader, CopyParser)
