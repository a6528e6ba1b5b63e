"""Copies of one message read once: the same deliveries as nats-py's own parser, however the bytes are cut."""
from __future__ import annotations

import asyncio
import random
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.protocol.parser import Parser

from gateway.streams.natscopies import CopyParser, plain_headers, read_copies_once
from gateway.streams.natssub import DirectSubscription, subscribe_direct
from tests.helpers import eventually

HEADERS = b"NATS/1.0\r\nNats-Stream: S\r\nNats-Sequence: %d\r\n\r\n"


def wire(rng: random.Random) -> tuple[bytes, int]:
    """A server's byte stream: runs of copies to direct subscriptions, other subscriptions, unknown sids,
    replies (one all digits), messages without headers, and the operations that are not messages."""
    out = bytearray()
    ops = 0
    for n in range(60):
        kind = rng.choice(["copies", "copies", "copies", "msg", "other", "unknown", "op"])
        if kind == "op":
            out += rng.choice([b"PING\r\n", b"+OK\r\n", b'INFO {"server_id":"x","max_payload":1048576}\r\n'])
            ops += 1
            continue
        payload = b'{"n":%d,"pad":"%s"}' % (n, b"x" * rng.randrange(0, 300))
        headers = HEADERS % n
        reply = rng.choice([b"", b"", b"_INBOX.r%d" % n, b"12345"])
        sids = {"copies": range(1, rng.randrange(2, 9)), "msg": [1, 2, 3], "other": [20], "unknown": [99]}[kind]
        for sid in sids:
            head = b" ".join(x for x in (b"live.s", b"%d" % sid, reply) if x)
            if kind == "msg":
                out += b"MSG %s %d\r\n%s\r\n" % (head, len(payload), payload)
            else:
                out += b"HMSG %s %d %d\r\n%s%s\r\n" % (head, len(headers), len(headers) + len(payload), headers,
                                                         payload)
    return bytes(out), ops


def client(parser: type[Parser]) -> tuple[NATS, dict[int, list[tuple[Any, ...]]], list[str]]:
    """A client that is never connected, its subscriptions recording what reaches them, operations noted."""
    nc = NATS()
    nc._ps = parser(nc)
    got: dict[int, list[tuple[Any, ...]]] = {}
    ops: list[str] = []
    for sid in range(1, 9):
        got[sid] = []
        nc._subs[sid] = DirectSubscription(nc, sid, "live.s", lambda m, sid=sid: got[sid].append(
            (m.subject, m.reply, m.data, m.headers)), 0)
    nc._subs[20] = Subscription(nc, 20, "live.s")
    got[20] = []

    async def note(name: str, *args: Any) -> None:
        ops.append(name)
    nc._process_ping = lambda: note("ping")  # type: ignore[method-assign]
    nc._process_info = lambda info, **kw: note("info")  # type: ignore[method-assign]
    return nc, got, ops


async def feed(parser: type[Parser], data: bytes, cuts: list[int]) -> tuple[dict[int, list[tuple[Any, ...]]],
                                                                            list[str], NATS]:
    nc, got, ops = client(parser)
    start = 0
    for cut in [*cuts, len(data)]:
        await nc._ps.parse(data[start:cut])
        start = cut
    queue = nc._subs[20]._pending_queue
    while not queue.empty():
        m = queue.get_nowait()
        got[20].append((m.subject, m.reply, m.data, m.headers))
    return got, ops, nc


async def test_every_cut_of_the_bytes_delivers_what_nats_py_delivers() -> None:
    rng = random.Random(7)
    data, _ = wire(rng)
    expected, expected_ops, plain = await feed(Parser, data, [])
    assert sum(map(len, expected.values())) > 100 and expected[20]
    cuttings = [sorted(rng.sample(range(1, len(data)), k)) for k in (1, 5, 50, 500)]
    cuttings.append(list(range(1, len(data), 7)))  # a few bytes at a time, through every control line
    for cuts in cuttings:
        got, ops, nc = await feed(CopyParser, data, cuts)
        assert got == expected and ops == expected_ops, f"{len(cuts)} cuts"
        assert nc._ps.copies > 50  # runs of copies were handed the first copy's Msg
        assert (nc.stats["in_msgs"], nc.stats["in_bytes"]) == (plain.stats["in_msgs"], plain.stats["in_bytes"])


async def test_a_copy_is_the_same_msg_and_a_different_message_is_not() -> None:
    data = b"".join(b"HMSG live.s %d 12 14\r\nNATS/1.0\r\n\r\nab\r\n" % sid for sid in (1, 2, 3))
    data += b"HMSG live.s 4 12 14\r\nNATS/1.0\r\n\r\nac\r\n"
    nc, _, _ = client(CopyParser)
    seen: list[Any] = []
    for sid in (1, 2, 3, 4):
        nc._subs[sid] = DirectSubscription(nc, sid, "live.s", seen.append, 0)
    await nc._ps.parse(data)
    assert seen[0] is seen[1] is seen[2] and seen[3] is not seen[0]
    assert [m.data for m in seen] == [b"ab", b"ab", b"ab", b"ac"] and nc._ps.copies == 2


async def test_a_real_server_delivers_every_copy_in_order_and_nats_py_keeps_its_limits(nats_server: Any) -> None:
    """200 direct subscriptions, a nats-py subscription and a request beside them, on a real server; a
    message at a subscription's pending limit is dropped as nats-py drops it (a slow consumer)."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)
    nc = read_copies_once(NATS())
    await nc.connect(nats_server.url_as("operator"), error_cb=on_error)
    got: dict[int, list[bytes]] = {i: [] for i in range(200)}
    for i in range(200):
        await subscribe_direct(nc, "t.copies", lambda m, i=i: got[i].append(m.data), pending_bytes_limit=4096)
    plain = await nc.subscribe("t.copies")
    async def answer(msg: Any) -> None:
        await msg.respond(b"yes")
    responder = await nc.subscribe("t.ask", cb=answer)
    await nc.flush()
    pub = await nats.connect(nats_server.url_as("operator"))
    sent = [b"%d" % i + b"." * (i % 50) for i in range(100)]
    for data in sent[:50]:
        await pub.publish("t.copies", data, headers={"Nats-Sequence": data[:3].decode()})
    await pub.publish("t.copies", b"x" * 5000)  # over the direct subscriptions' limit
    for data in sent[50:]:
        await pub.publish("t.copies", data)
    await pub.flush()
    await eventually(lambda: all(len(g) == 100 for g in got.values()), timeout=15)
    assert all(g == sent for g in got.values())
    assert len(errors) == 200 and all(isinstance(e, nats.errors.SlowConsumerError) for e in errors)
    assert (await pub.request("t.ask", b"?", timeout=5)).data == b"yes"
    plain_got = [(await plain.next_msg(timeout=5)).data for _ in range(101)]
    assert plain_got == sent[:50] + [b"x" * 5000] + sent[50:]
    assert isinstance(nc._ps, CopyParser) and nc._ps.copies >= 100 * 150
    await responder.unsubscribe()
    await pub.close()
    await nc.close()


async def test_plain_headers_read_as_nats_py_reads_them_and_anything_else_is_left_to_it() -> None:
    nc = NATS()
    blocks = [HEADERS % 7, b"NATS/1.0\r\nA:b\r\nA: c\r\nEmpty:\r\nUtf: \xc3\xa9t\xc3\xa9 \r\nBad: \xff\r\n\r\n",
              b"NATS/1.0\r\nNats-Msg-Id:  x y \r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n",
              b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Stream: 3\r\n\r\n", b"NATS/1.0\r\n Spaced : v\r\n\r\n",
              b"NATS/1.0\r\nna me: v\r\n\r\n", b"NATS/1.0\r\nno colon\r\nK: v\r\n\r\n", b"NATS/1.0\r\n\r\n",
              b"NATS/1.0\r\nK\xc3\xa9: v\r\n\r\n"]
    read_here = 0
    for raw in blocks:
        fast = plain_headers(raw)
        if fast is not None:
            read_here += 1
            assert fast == await nc._process_headers(raw), raw
    assert read_here == 3  # the plain ones; status lines and odd names went to nats-py


async def test_a_handler_failing_on_a_copy_is_logged_and_the_other_copies_still_arrive(
        caplog: pytest.LogCaptureFixture) -> None:
    data = b"".join(b"HMSG live.s %d 12 14\r\nNATS/1.0\r\n\r\nab\r\n" % sid for sid in (1, 2, 3))
    nc, _, _ = client(CopyParser)
    seen: list[int] = []

    def handler(sid: int) -> Any:
        def on_msg(msg: Any) -> None:
            if sid == 2:
                raise ValueError("handler broke")
            seen.append(sid)
        return on_msg
    for sid in (1, 2, 3):
        nc._subs[sid] = DirectSubscription(nc, sid, "live.s", handler(sid), 0)
    await nc._ps.parse(data + b"PING\r\n")
    assert seen == [1, 3] and nc._ps.copies == 2
    assert "message handler for live.s failed" in caplog.text


async def test_the_gateway_reads_copies_once_by_default_and_with_nats_pys_parser_when_told(
        aiohttp_server: Any, gateway_settings: Any, token: Any, nats_server: Any) -> None:
    """GAIA_READ_COPIES_ONCE=0 is a working switch: the same events reach every player either way."""
    from dataclasses import replace

    from gateway.app import create_app
    from gateway.keys import NATS as GW_NATS
    from harness.client.ws import GaiaClient
    from shared.natsconn import connect_tool
    from tests.helpers import EXPERIENCE, broadcast

    for read_once, parser in ((1, CopyParser), (0, Parser)):
        settings = replace(gateway_settings, read_copies_once=read_once)
        server = await aiohttp_server(create_app(settings, f"gw{read_once}"))
        assert await server.app[GW_NATS].wait_ready(10)
        assert type(server.app[GW_NATS].nc._ps) is parser
        players = [GaiaClient(str(server.make_url("")).rstrip("/"), token(f"p{read_once}{i}"), EXPERIENCE)
                   for i in range(3)]
        for player in players:
            await player.connect()
            await player.next("area_of_interest")
        nc = await connect_tool(nats_server.url_as("kb"))
        await nc.publish(f"world.updates.exp.{EXPERIENCE}", broadcast(500 + read_once, f"note{read_once}"))
        await nc.flush()
        for player in players:
            while (update := await player.next("world_update"))["changes"][0]["value"] != f"note{read_once}":
                pass
            assert update["user_id"] == player.user_id
        await nc.close()
        await asyncio.gather(*(player.close() for player in players))
