"""The per-session subscription: core NATS while live, a short-lived consumer only to catch up, exact gaps."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace
from typing import Any, AsyncIterator

import aiohttp
import nats
import orjson

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from gateway.keys import REGISTRY, STREAMS
from harness.checks.verify import player_seqs
from harness.client.ws import GaiaClient
from shared.natsconn import connect_tool
from tests.helpers import EXPERIENCE, SUBJECT, broadcast, eventually, publish_broadcasts

LIVE = f"live.world.updates.exp.{EXPERIENCE}"


async def test_live_sessions_add_one_core_subscription_each_and_no_consumer(players, nats_server) -> None:
    clients = [await players(f"p{i}") for i in range(5)]

    async def live_subs() -> int:
        return sum(1 for s in await nats_server.subscriptions() if s == LIVE)
    assert await live_subs() == 5
    assert await nats_server.consumer_filters() == []
    seqs = await publish_broadcasts(nats_server.url_as("kb"), 3)
    for client in clients:
        while client.last_seq != seqs[-1]:
            await client.next("world_update")
    assert await nats_server.consumer_filters() == []  # live traffic never touches JetStream consumers
    for client in clients:
        await client.close()
    await eventually(lambda: _is(live_subs(), 0))


async def _is(coro: Any, value: Any) -> bool:
    return await coro == value


async def test_a_resume_after_a_short_gap_reads_by_direct_gets_and_makes_no_consumer(
        players, nats_server, gateway_server, token) -> None:
    alice = await players("alice")
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await alice.next("world_update")
    await alice.close()
    missed = await publish_broadcasts(nats_server.url_as("kb"), 40)
    stats = gateway_server.app[STREAMS].stats
    consumers_before, requests_before = stats.consumers, gateway_server.app[STREAMS].reads.direct.requests
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('alice')}&last_seq={cursor}") as ws:
            seqs, resumed = await _until_resumed(ws)
    assert seqs == missed and (resumed["from_seq"], resumed["replayed"]) == (cursor + 1, 40)
    assert stats.consumers == consumers_before  # no JetStream state was made for it
    assert gateway_server.app[STREAMS].reads.direct.requests > requests_before
    assert await nats_server.consumer_filters() == []


async def _until_resumed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[int], dict[str, Any]]:
    """The world_update seqs a resuming socket gets up to its `resumed` frame, and that frame."""
    seqs: list[int] = []
    while True:
        frame = orjson.loads((await ws.receive(timeout=10)).data)
        if frame["type"] == "world_update":
            seqs.append(frame["seq"])
        elif frame["type"] == "resumed":
            return seqs, frame


async def test_sessions_resuming_from_one_cursor_share_one_direct_read(
        players, nats_server, gateway_server, token) -> None:
    """A gateway restart drops everyone at the same event: their resumes are served by one read."""
    first = await players("p0")
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await first.next("world_update")
    await first.close()
    missed = await publish_broadcasts(nats_server.url_as("kb"), 5)
    streams = gateway_server.app[STREAMS]
    requests_before = streams.reads.direct.requests
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        sockets = await asyncio.gather(*(http.ws_connect(
            f"{url}?experience={EXPERIENCE}&token={token(f'r{i}')}&last_seq={cursor}") for i in range(30)))
        results = await asyncio.gather(*(_until_resumed(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
    assert all(seqs == missed for seqs, _ in results)
    # 30 sessions; far fewer reads (those that met in flight shared one; a few started alone).
    assert streams.reads.direct.requests - requests_before < 30


async def test_a_resume_from_a_cursor_the_stream_no_longer_holds_gets_a_fresh_snapshot(
        players, nats_server, gateway_server, token) -> None:
    alice = await players("alice")
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await alice.next("world_update")
    await alice.close()
    missed = await publish_broadcasts(nats_server.url_as("kb"), 3)
    nc = await nats.connect(nats_server.url_as("operator"))
    for seq in range(1, missed[0] + 1):  # the stream's head goes, as its limits would take it
        await nc.jetstream().delete_msg("WORLD_UPDATES", seq)
    await nc.close()
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('alice')}&last_seq={cursor}") as ws:
            types = []
            while "area_of_interest" not in types:
                types.append(orjson.loads((await ws.receive(timeout=10)).data)["type"])
    assert types[-2:] == ["resync_required", "area_of_interest"] and "world_update" not in types


async def test_a_long_resume_makes_a_consumer_paced_by_the_socket_that_is_gone_once_caught_up(
        aiohttp_server, gateway_settings, nats_server, token) -> None:
    # A small outbox and a phone with a small receive buffer: what it has not read cannot all sit in buffers
    # (a socket's own grows up to tcp_rmem's maximum, tens of MB on some machines), so the replay must wait.
    server = await aiohttp_server(create_gateway(replace(gateway_settings, catchup_direct_max=100,
                                                         session_send_queue_size=16), "gwlong"))
    assert await server.app[GW_NATS].wait_ready(10)
    alice = GaiaClient(str(server.make_url("")).rstrip("/"), token("alice"), EXPERIENCE)
    await alice.connect()
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await alice.next("world_update")
    await alice.close()
    backlog = await publish_broadcasts(nats_server.url_as("kb"), 400, note="x" * 16000)  # 6 MB the phone has not read
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)) as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('alice')}&last_seq={cursor}") as ws:
            # The phone reads nothing yet: the replay waits for room, its consumer alive meanwhile.
            await eventually(lambda: _is(nats_server.consumer_filters(), [[SUBJECT]]))
            seqs, resumed = await _until_resumed(ws)
            assert seqs == backlog  # all of it, once, in order
            assert (resumed["from_seq"], resumed["replayed"]) == (cursor + 1, 400)
            assert resumed["to_seq"] >= backlog[-1]  # and past it: her own join, which she is not sent
            await eventually(lambda: _is(nats_server.consumer_filters(), []))
            assert server.app[REGISTRY].closed_by_code.get(4408, 0) == 0
    assert server.app[STREAMS].stats.consumers == 1


async def test_a_gap_on_the_gateways_connection_is_found_by_last_sequence_and_repaired(
        aiohttp_server, gateway_settings, token, nats_server) -> None:
    # A 1,000-byte pending limit: nats-py drops every larger message on this connection, as a
    # slow-consumer cut would drop a burst, and only Nats-Last-Sequence on the next one can tell.
    server = await aiohttp_server(create_gateway(replace(gateway_settings, sub_pending_bytes=1000), "gwgap"))
    assert await server.app[GW_NATS].wait_ready(10)
    alice = GaiaClient(str(server.make_url("")).rstrip("/"), token("alice"), EXPERIENCE)
    await alice.connect()
    await alice.next("area_of_interest")
    nc = await connect_tool(nats_server.url_as("kb"))
    js = nc.jetstream()
    futures = [await js.publish_async(SUBJECT, broadcast(1000 + i, "x" * (2000 if i % 10 == 5 else 1)))
               for i in range(300)]
    published = [(await f).seq for f in futures]
    await nc.close()
    while alice.last_seq != published[-1]:
        await alice.next("world_update", timeout=10)
    stats = server.app[STREAMS].stats
    assert stats.gaps >= 1 and stats.catchups >= 1  # found by the next message's Nats-Last-Sequence
    assert alice.seqs == published  # nothing lost, nothing twice
    await eventually(lambda: _is(nats_server.consumer_filters(), []))
    await alice.close()


async def test_a_nats_restart_loses_nothing_and_leaves_no_consumer(players, nats_server, kb_server, settings) -> None:
    alice = await players("alice")
    bob = await players("bob")
    assert (await bob.act("go", destination="main_room"))["success"]
    await alice.next("world_update")
    nats_server.kill()
    for place in ("counter", "main_room", "counter"):  # committed in kb while the bus is down
        result = await bob.act("go", destination=place)
        assert result["success"]
    nats_server.start()
    while alice.world.version < result["snapshot_version"]:
        await alice.next("world_update", timeout=20)
    expected = await player_seqs(nats_server.url_as("gateway"), settings.stream_name, EXPERIENCE, "alice")
    assert alice.seqs == [s for s in expected if s >= alice.seqs[0]]
    assert alice.world.gaps == 0
    await eventually(lambda: _is(nats_server.consumer_filters(), []))


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A phone's socket: a small receive buffer, so what it has not read backs up into the gateway."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    return sock

@contextlib.asynccontextmanager
async def slow_phone(server: Any, token: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A socket with a small receive buffer, past its first snapshot."""
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)) as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token}", max_msg_size=0) as ws:
            while orjson.loads((await ws.receive(timeout=10)).data)["type"] != "area_of_interest":
                pass
            yield ws


async def test_a_burst_beyond_the_outbox_is_read_again_paced_not_closed(aiohttp_server, gateway_settings, token,
                                                                       nats_server) -> None:
    server = await aiohttp_server(create_gateway(replace(gateway_settings, session_send_queue_size=16), "gwburst"))
    assert await server.app[GW_NATS].wait_ready(10)
    stats = server.app[STREAMS].stats
    async with slow_phone(server, token("alice")) as ws:
        # 5 MB while the phone looks away: far more than 16 frames of outbox. It reads nothing until
        # the gateway has dropped what waited and started reading it again from the stream.
        caught_up = stats.catchups
        published = await publish_broadcasts(nats_server.url_as("kb"), 300, note="x" * 16000)
        await eventually(lambda: stats.catchups > caught_up)
        seqs: list[int] = []
        while seqs[-1:] != published[-1:]:
            frame = orjson.loads((await ws.receive(timeout=10)).data)
            if frame["type"] == "world_update":
                seqs.append(frame["seq"])
        assert seqs == published and not ws.closed  # all of it, once, in order, still connected
    assert server.app[REGISTRY].closed_by_code.get(4408, 0) == 0
    assert server.app[STREAMS].stats.catchups >= 1  # the overflow was read again from the stream


async def test_a_storm_while_connecting_is_read_again_not_a_reason_to_close(aiohttp_server, gateway_settings, token,
                                                                           nats_server) -> None:
    """Events that pile up behind the first snapshot (here: 300 at once, 16 frames of room) are read
    again from the stream, paced, after it: every client gets its snapshot and then everything, once."""
    server = await aiohttp_server(create_gateway(replace(gateway_settings, session_send_queue_size=16), "gwstorm"))
    assert await server.app[GW_NATS].wait_ready(10)
    base = str(server.make_url("")).rstrip("/")
    clients = [GaiaClient(base, token(f"c{i}"), EXPERIENCE) for i in range(5)]
    storm = asyncio.create_task(publish_broadcasts(nats_server.url_as("kb"), 300, note="y" * 2000))
    await asyncio.gather(*(c.connect() for c in clients))
    published = await storm
    for client in clients:
        await client.next("area_of_interest", timeout=10)
        while published[-1] not in client.seqs:  # (their own joins come after: presence, not for them)
            await client.next("world_update", timeout=10)
        got = [s for s in client.seqs if s in set(published)]
        assert got == published[published.index(got[0]):], "from its first event on: all of them, once, in order"
        assert client.close_code is None
    assert server.app[REGISTRY].closed_by_code.get(4408, 0) == 0
    for client in clients:
        await client.close()


async def test_a_50000_event_backlog_is_replayed_to_a_resuming_client_without_a_4408(
        aiohttp_server, gateway_settings, token, nats_server) -> None:
    """Paced catch-up: the replay reads only as fast as the socket drains, so the outbox (256 frames)
    never overflows however long the backlog (snapshots instead are switched off here)."""
    server = await aiohttp_server(create_gateway(replace(gateway_settings, resync_after_events=1_000_000), "gw50k"))
    assert await server.app[GW_NATS].wait_ready(10)
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    backlog = await publish_broadcasts(nats_server.url_as("kb"), 50_000, first_version=10_000)
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('alice')}&last_seq={cursor}",
                                   max_msg_size=0) as ws:
            seqs, resumed = [], None
            while resumed is None:
                frame = orjson.loads((await ws.receive(timeout=30)).data)
                if frame["type"] == "world_update":
                    seqs.append(frame["seq"])
                elif frame["type"] == "resumed":
                    resumed = frame
            assert seqs == backlog and resumed["replayed"] == 50_000 and not ws.closed
    assert server.app[REGISTRY].closed_by_code.get(4408, 0) == 0


async def test_a_resume_too_far_behind_says_resync_before_any_live_event(aiohttp_server, gateway_settings, token,
                                                                        nats_server, monkeypatch) -> None:
    """Found by the soak: live events that came in while the catch-up read the subject's end were
    passed on before `resync_required`, a hole between the old cursor and the fresh snapshot."""
    from gateway.streams.reads import StreamReads
    server = await aiohttp_server(create_gateway(replace(gateway_settings, resync_after_events=5), "gwresync"))
    assert await server.app[GW_NATS].wait_ready(10)
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await publish_broadcasts(nats_server.url_as("kb"), 20, first_version=2000)  # 20 behind: a snapshot, not a replay
    real_last = StreamReads.subject_last

    link = server.app[GW_NATS]

    async def slow_last(self: StreamReads, subject: str) -> int:
        answer = await real_last(self, subject)
        before = link.nc.stats["in_msgs"]
        await publish_broadcasts(nats_server.url_as("kb"), 3, first_version=3000, note="live")  # arrive meanwhile
        await eventually(lambda: link.nc.stats["in_msgs"] >= before + 3)  # in the session's hands before the end
        return answer
    monkeypatch.setattr(StreamReads, "subject_last", slow_last)
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token('alice')}&last_seq={cursor}") as ws:
            kinds: list[str] = []
            while "area_of_interest" not in kinds:
                frame = orjson.loads((await ws.receive(timeout=10)).data)
                kinds.append(frame["type"])
    assert kinds.index("resync_required") < kinds.index("area_of_interest")
    assert "world_update" not in kinds[:kinds.index("resync_required")], kinds


async def test_a_slow_socket_far_behind_gets_a_snapshot_instead_of_being_closed(aiohttp_server, gateway_settings,
                                                                               token, nats_server) -> None:
    """Its outbox (16 frames) overflows under a 300-event burst; reading it all again would be more
    than 20 events behind, so the stream says resync_required and a fresh snapshot follows: the
    phone stays connected and consistent instead of being closed with 4408."""
    settings = replace(gateway_settings, session_send_queue_size=16, resync_after_events=20)
    server = await aiohttp_server(create_gateway(settings, "gwslowsnap"))
    assert await server.app[GW_NATS].wait_ready(10)
    stats = server.app[STREAMS].stats
    async with slow_phone(server, token("alice")) as ws:
        published = await publish_broadcasts(nats_server.url_as("kb"), 300, note="z" * 16000)
        await eventually(lambda: stats.resyncs == 1)  # the phone looks away until the gateway gave up replaying
        frames: list[dict[str, Any]] = []
        while "area_of_interest" not in [f["type"] for f in frames]:
            frames.append(orjson.loads((await ws.receive(timeout=10)).data))
        kinds = [f["type"] for f in frames]
        assert kinds.index("resync_required") < kinds.index("area_of_interest") and not ws.closed
        # The resync was due: the gateway had dropped more than resync_after_events of what was published.
        behind = int(frames[kinds.index("resync_required")]["reason"].split()[0])
        assert settings.resync_after_events < behind <= len(published), frames[kinds.index("resync_required")]
    assert server.app[REGISTRY].closed_by_code.get(4408, 0) == 0
    assert server.app[STREAMS].stats.resyncs >= 1
