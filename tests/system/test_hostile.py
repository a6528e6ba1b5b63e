"""A hostile client (issue 38): every frame costs, a message that never ends ends, an abuser is not read on,
the operator routes are off the public listener, malformed HTTP costs one log line."""
from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app as create_gateway
from gateway.keys import METRICS, REGISTRY
from gateway.keys import NATS as GW_NATS
from harness.client.rawws import CLOSE, CONTINUATION, PING, PONG, TEXT, RawSocket, frame
from harness.client.ws import GaiaClient
from tests.helpers import ADMIN, EXPERIENCE, eventually


async def gateway(aiohttp_server: Any, gateway_settings: Any, **overrides: Any) -> Any:
    server = await aiohttp_server(create_gateway(replace(gateway_settings, **overrides), "gwhostile"))
    assert await server.app[GW_NATS].wait_ready(10)
    return server


def base(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


async def raw(server: Any, token: Any, user: str) -> RawSocket:
    sock = await RawSocket.open(base(server), token(user), EXPERIENCE)
    opcode, payload = await sock.next_frame()  # `connected`
    assert opcode == TEXT and b'"connected"' in payload
    return sock


async def answers_a_ping(sock: RawSocket) -> bool:
    """The session still reads and answers: an app-level ping comes back as a pong frame of ours."""
    await sock.send(frame(TEXT, b'{"type":"ping","timestamp":7}'))
    while True:
        opcode, payload = await asyncio.wait_for(sock.next_frame(), 5)
        if opcode == TEXT and b'"pong"' in payload:
            return True


async def flood_until_closed(sock: RawSocket, data: bytes, limit_bytes: int = 64 * 2**20) -> int | None:
    """Keep sending `data` until the gateway closes; its close code (None: no close frame)."""
    code = asyncio.create_task(sock.close_code())
    sent = 0
    try:
        while not code.done() and sent < limit_bytes:
            await asyncio.wait_for(sock.send(data), 5)
            sent += len(data)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    return await asyncio.wait_for(code, 10)


# ---- item 1: every frame costs -------------------------------------------------------------------

async def test_a_message_that_never_ends_is_closed_after_its_bound_on_frames(aiohttp_server, gateway_settings,
                                                                            token) -> None:
    """65.7 M empty continuation frames of one message never closed the socket: now the message may have
    GAIA_MESSAGE_MAX_FRAMES frames, and one more closes it 4413 (a message that ends within them is fine)."""
    server = await gateway(aiohttp_server, gateway_settings, message_max_frames=8, frame_burst=1000)
    sock = await raw(server, token, "frag")
    whole = frame(TEXT, b'{"type":"ping",', fin=False) + frame(CONTINUATION, b"", fin=False) * 6
    await sock.send(whole + frame(CONTINUATION, b'"timestamp":1}'))  # 8 frames: a message
    assert await answers_a_ping(sock)
    start = frame(TEXT, b"{", fin=False) + frame(CONTINUATION, b"", fin=False) * 7
    assert await flood_until_closed(sock, start + frame(CONTINUATION, b"", fin=False) * 10_000) == 4413


async def test_a_message_that_never_ends_is_closed_after_its_bound_on_time(aiohttp_server, gateway_settings,
                                                                          token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, message_max_s=0.5)
    sock = await raw(server, token, "slowfrag")
    await sock.send(frame(TEXT, b"{", fin=False))
    assert await asyncio.wait_for(sock.close_code(), 10) == 4413


@pytest.mark.parametrize("opcode", [PING, PONG, TEXT, CONTINUATION], ids=["ping", "pong", "text", "continuation"])
async def test_every_kind_of_frame_draws_on_the_frame_budget(aiohttp_server, gateway_settings, token,
                                                             opcode: int) -> None:
    """660 k pings in 10 s cost 6.2 CPU-seconds and never closed the socket: every frame counts now."""
    server = await gateway(aiohttp_server, gateway_settings, frame_rate_per_s=1.0, frame_burst=50,
                           msg_rate_per_s=1e6, msg_burst=10**6, message_max_frames=10**6)
    sock = await raw(server, token, "frames")
    if opcode == TEXT:
        data = frame(TEXT, b'{"type":"ping"}') * 60
    elif opcode == CONTINUATION:
        data = frame(TEXT, b"[", fin=False) + frame(CONTINUATION, b"", fin=False) * 59
    else:
        data = frame(opcode, b"x") * 60
    assert await flood_until_closed(sock, data) == 4429


async def test_the_bytes_a_client_sends_draw_on_the_byte_budget(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, bytes_per_s=1000.0, bytes_burst=100_000,
                           msg_rate_per_s=1e6, msg_burst=10**6)
    sock = await raw(server, token, "bytes")
    big = frame(TEXT, b'{"type":"ping","timestamp":"' + b"x" * 30_000 + b'"}')
    assert await flood_until_closed(sock, big) == 4429


async def test_unmasked_client_frames_close_1002(aiohttp_server, gateway_settings, token) -> None:
    """RFC 6455 5.1: a server MUST close the connection on an unmasked client frame (a masked close frame
    still gets the close handshake)."""
    server = await gateway(aiohttp_server, gateway_settings)
    sock = await raw(server, token, "unmasked")
    await sock.send(frame(TEXT, b'{"type":"ping","timestamp":1}', mask=False))
    assert await asyncio.wait_for(sock.close_code(), 10) == 1002
    polite = await raw(server, token, "polite")
    await polite.send(frame(CLOSE, struct.pack("!H", 1000)))
    assert await asyncio.wait_for(polite.close_code(), 5) == 1000


async def test_unsolicited_pongs_do_not_keep_a_silent_client_alive(aiohttp_server, gateway_settings, token) -> None:
    """A client that answers none of our pings is closed at the heartbeat, however many pongs it sends on
    its own (they kept a non-reading socket open for as long as it liked); one that answers them stays."""
    server = await gateway(aiohttp_server, gateway_settings, heartbeat_s=0.5)
    answering = GaiaClient(base(server), token("answering"), EXPERIENCE)  # aiohttp's client answers pings
    await answering.connect()
    sock = await raw(server, token, "pongs")
    ended = asyncio.create_task(sock.ended())  # reads and drops everything, answers no ping
    while not ended.done():
        await sock.send(frame(PONG, b"alive"))
        await asyncio.wait([ended], timeout=0.1)
    await eventually(lambda: server.app[REGISTRY].count_for("pongs") == 0)
    assert server.app[REGISTRY].closes[("client", "1006")] == 1, "gone without a close: a dropped client"
    assert answering.is_open and await answering.ping() > 0, "several heartbeats later, answered"
    await answering.close()


async def test_pings_are_answered_within_the_frame_budget(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, frame_rate_per_s=1.0, frame_burst=20)
    sock = await raw(server, token, "pinger")
    await sock.send(frame(PING, b"hello"))
    while (answer := await asyncio.wait_for(sock.next_frame(), 5))[0] != PONG:
        pass
    assert answer == (PONG, b"hello")
    assert await flood_until_closed(sock, frame(PING, b"x") * 100) == 4429


def rx_queue(local_port: int, remote_port: int) -> int:
    """Bytes waiting unread in the receive queue of the loopback socket local_port -> remote_port (Linux)."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":"), fields[2].split(":")
        if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
            return int(fields[4].split(":")[1], 16)
    return -1  # gone


async def test_a_socket_closed_for_abuse_is_not_read_any_further(aiohttp_server, gateway_settings, token,
                                                                monkeypatch) -> None:
    """Today's 4429 for a text flood waited for the client's close frame, reading (and parsing) what it had
    sent meanwhile, and stalled the room: now what the client sends after the close stays unread in the
    kernel, and our end of the stream (FIN) follows the close frame."""
    monkeypatch.setattr("gateway.ws.socket.CUT_OFF_S", 30.0)  # no cut-off during the look
    server = await gateway(aiohttp_server, gateway_settings, msg_rate_per_s=5.0, msg_burst=5, frame_burst=10**6,
                           bytes_burst=10**9)
    sock = await raw(server, token, "texter")
    code = asyncio.create_task(sock.close_code())
    await sock.send(frame(TEXT, b'{"type":"ping","timestamp":1}') * 20)
    assert await asyncio.wait_for(code, 10) == 4429
    client_port = sock.writer.get_extra_info("sockname")[1]
    sock.writer.write(frame(TEXT, b" " * 60_000) * 4)  # 240 KB more: it waits in the gateway's kernel, unread
    await eventually(lambda: rx_queue(server.port, client_port) >= 100_000)  # a full receive buffer, never read
    assert await asyncio.wait_for(sock.reader.read(), 5) == b"", "FIN right after the close frame"


# ---- item 3: operator routes and the closes' metric ---------------------------------------------------

@pytest.mark.parametrize("path", ["/metrics", "/debug/event-timings"])
async def test_operator_routes_answer_only_the_admin_token(aiohttp_server, gateway_settings, path: str) -> None:
    server = await gateway(aiohttp_server, gateway_settings)
    off = await gateway(aiohttp_server, gateway_settings, admin_token="")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN["Authorization"] + "x"}):
            async with http.get(server.make_url(path), headers=headers) as resp:
                assert resp.status == 404, headers
        async with http.get(server.make_url(path), headers=ADMIN) as resp:
            assert resp.status == 200
        for headers in ({}, {"Authorization": "Bearer "}, ADMIN):
            async with http.get(off.make_url(path), headers=headers) as resp:
                assert resp.status == 404, "no GAIA_ADMIN_TOKEN: off for everyone"


@pytest.mark.parametrize("after", ["1" * 4301, "\u00b2", "\u0661", "-1", "", "1 ", "99999999999999999999"])
async def test_event_timings_refuses_a_bad_cursor_with_400(gateway_server, after: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.make_url("/debug/event-timings"), params={"after": after},
                            headers=ADMIN) as resp:
            assert resp.status == 400, (after[:10], resp.status)
            assert (await resp.json())["error"] == "invalid_message"


async def test_close_codes_a_client_sends_are_counted_under_a_fixed_label_set(gateway_server, token) -> None:
    """47 closes made 45 series: a client's own code was the label. And a client closing with 4408 is no
    slow consumer of ours."""
    url = base(gateway_server)
    for code in (4408, 4999, 3001, 3002, 1000, 1001, 4429):
        client = GaiaClient(url, token(f"closer{code}"), EXPERIENCE)
        await client.connect()
        await client.close(code=code)
    await eventually(lambda: sum(gateway_server.app[REGISTRY].closes.values()) == 7)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for m in gateway_server.app[METRICS].registry.collect() for s in m.samples}
    closes = {labels: v for (name, labels), v in samples.items() if name == "gaia_gateway_session_closes_total"}
    assert closes == {(("by", "client"), ("code", "1000")): 1, (("by", "client"), ("code", "1001")): 1,
                      (("by", "client"), ("code", "other")): 5}
    assert samples[("gaia_gateway_slow_consumer_closes_total", ())] == 0


# ---- item 4: protocol hygiene --------------------------------------------------------------------------

async def test_a_malformed_http_request_is_one_log_line(gateway_server, caplog) -> None:
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection(gateway_server.host, gateway_server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert (await reader.read()).split(b" ", 2)[1] == b"400"
    writer.close()
    await eventually(lambda: any(r.name == "aiohttp.server" for r in caplog.records))
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1 and records[0].exc_info is None and records[0].levelno == logging.INFO
    assert "BadHttpMessage" in records[0].getMessage() and "\n" not in records[0].getMessage()
    assert "Traceback" not in caplog.text
