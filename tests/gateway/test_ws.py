"""The WebSocket gateway end to end: real nats-server, kb and gateway apps, real WebSocket clients."""
from __future__ import annotations

import asyncio
import base64
import os
import socket
from dataclasses import replace

import aiohttp
import pytest

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from gateway.keys import REGISTRY
from harness.client.ws import GaiaClient
from shared.natsconn import connect_tool
from shared.schemas.events import WorldUpdateEventSchema
from shared.schemas.messages import SERVER_MESSAGES
from tests.helpers import EXPERIENCE, broadcast, eventually


async def test_connect_sends_connected_then_area_of_interest(players) -> None:
    alice = await players("alice", wait_state=False)
    assert alice.connected["user_id"] == "alice" and alice.connected["experience"] == EXPERIENCE
    view = await alice.next("area_of_interest")
    assert alice.frames[0]["type"] == "connected" and alice.frames[1] is view
    SERVER_MESSAGES["area_of_interest"].load(view)
    assert view["player"]["current_area"] == "entrance"


async def test_collect_gets_action_response_and_a_valid_world_update(players) -> None:
    alice = await players("alice")
    assert (await alice.act("go", destination="main_room"))["success"]
    answer = await alice.act("collect_item", instance_id="dream_bottle_1")
    assert answer["type"] == "action_response" and answer["success"] and answer["action"] == "collect_item"
    updates = [await alice.next("world_update"), await alice.next("world_update")]
    for update in updates:
        WorldUpdateEventSchema().load(update)
    assert updates[1]["changes"][0] == {"operation": "remove", "area_id": "main_room", "spot_id": "shelf_1",
                                        "instance_id": "dream_bottle_1"}
    assert updates[0]["seq"] < updates[1]["seq"]
    assert alice.world.version == 2 and alice.world.gaps == 0


async def test_event_published_while_client_is_idle_is_delivered(players, kb_server, kb_http) -> None:
    alice = await players("alice")
    async with kb_http.post(str(kb_server.make_url(f"/experiences/{EXPERIENCE}/actions")),
                            json={"user_id": "alice", "action": "go", "destination": "garden"}) as r:
        assert (await r.json())["success"]
    update = await alice.next("world_update")
    assert update["changes"] == [{"operation": "update", "area_id": None, "path": "player.current_area",
                                  "value": "garden"}]


async def test_subscription_lives_exactly_as_long_as_the_socket(players, nats_server) -> None:
    async def live_subjects() -> list[str]:
        return [s for s in await nats_server.subscriptions() if s == f"live.world.updates.exp.{EXPERIENCE}"]

    alice = await players("alice")
    assert len(await live_subjects()) == 1
    assert await nats_server.consumer_filters() == []  # a live session is a core subscription, nothing more
    await alice.close()
    await eventually(lambda: _empty(live_subjects()))


async def test_the_stream_republishes_to_live_subjects_and_admits_a_storm_of_catch_ups(gateway_server,
                                                                                       settings, nats_server) -> None:
    nc = await connect_tool(nats_server.url_as("gateway"))
    info = await nc.jetstream().stream_info(settings.stream_name)
    await nc.close()
    assert (info.config.republish.src, info.config.republish.dest) == ("world.updates.>", "live.world.updates.>")
    assert info.config.max_consumers == settings.stream_max_consumers >= 100_000  # nats-server defaults to 1,000


async def _empty(coro) -> bool:
    return not await coro


async def test_two_devices_of_one_user_each_get_their_own_subscription_and_every_event(players, nats_server) -> None:
    phone, headset = await players("alice"), await players("alice")
    subs = [s for s in await nats_server.subscriptions() if s == f"live.world.updates.exp.{EXPERIENCE}"]
    assert len(subs) == 2
    await phone.act("go", destination="main_room")
    assert (await phone.next("world_update"))["seq"] == (await headset.next("world_update"))["seq"]


async def test_bad_frames_get_error_frames_and_the_session_survives(players) -> None:
    alice = await players("alice")
    cases = [("{nope", "invalid_json"), ('{"type": "teleport"}', "unknown_message_type"),
             ('{"type": "action", "id": "z", "action": "collect_item"}', "invalid_message"),
             ('{"type": "action", "id": "y", "action": "fly"}', "unknown_action")]
    for raw, code in cases:
        await alice._ws.send_str(raw)
        error = await alice.next("error")
        assert error["code"] == code, error
    assert error["id"] == "y"
    await alice._ws.send_bytes(b"\x00\x01")
    assert (await alice.next("error"))["code"] == "invalid_message"
    assert await alice.ping() > 0


async def test_schema_error_frame_carries_field_messages(players) -> None:
    alice = await players("alice")
    await alice.send({"type": "action", "id": 9, "action": "go"})
    error = await alice.next("error")
    assert error == {"type": "error", "code": "invalid_message", "message": "message does not match its schema",
                     "id": 9, "details": {"destination": ["Missing data for required field."]}}


async def test_bad_or_expired_token_closes_4401(gateway_server, token) -> None:
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        for query in (f"?experience={EXPERIENCE}", f"?experience={EXPERIENCE}&token=garbage",
                      f"?experience={EXPERIENCE}&token={token('alice', -60)}"):
            async with http.ws_connect(url + query) as ws:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
        async with http.ws_connect(url + f"?experience={EXPERIENCE}",
                                   headers={"Authorization": f"Bearer {token('alice')}"}) as ws:
            assert (await ws.receive_json())["type"] == "connected"


async def test_unknown_experience_closes_4403(gateway_server, token) -> None:
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url + f"?experience=atlantis&token={token('alice')}") as ws:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4403


async def test_ping_is_answered_while_kb_is_slow(players, kb_server) -> None:
    alice = await players("alice")
    await kb_server.close()  # kb gone: the action waits for its timeout, pings must not
    pending = asyncio.create_task(alice.act("inventory"))
    await asyncio.sleep(0.05)
    assert await alice.ping() < 1000
    answer = await pending
    assert answer["type"] == "error" and answer["code"] == "kb_unavailable"
    assert await alice.ping() > 0


async def test_health_reports_nats_and_sessions(players, gateway_server) -> None:
    await players("alice")
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.make_url("/health")) as resp:
            health = await resp.json()
    assert resp.status == 200 and health["status"] == "healthy" and health["nats"] == {"connected": True, "jetstream": True}
    assert health["sessions"]["websocket"] == 1


async def test_nats_down_keeps_sessions_and_they_resubscribe_when_it_returns(players, nats_server, kb_server, kb_http,
                                                                              gateway_server) -> None:
    alice = await players("alice")
    nats_server.stop()
    async with aiohttp.ClientSession() as http:
        async def degraded() -> bool:
            async with http.get(gateway_server.make_url("/health")) as resp:
                return resp.status == 503 and (await resp.json())["status"] == "degraded"
        await eventually(degraded)
    assert await alice.ping() > 0
    assert (await alice.act("go", destination="main_room"))["success"]  # committed, waits in kb's outbox
    nats_server.start()
    update = await alice.next("world_update", timeout=20)
    assert update["changes"][0]["value"] == "main_room"


async def raw_ws_connect(port: int, path: str) -> socket.socket:
    """A WebSocket handshake on a plain socket that will then never read: a stalled phone."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                   f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert b" 101 " in head
    return sock


@pytest.mark.also_with_send_tick
async def test_slow_consumer_is_closed_4408_and_others_are_unaffected(aiohttp_server, gateway_settings, token,
                                                                      settings, nats_server) -> None:
    server = await aiohttp_server(create_gateway(replace(gateway_settings, session_send_queue_size=16,
                                                         slow_consumer_s=1.0), "gwslow"))
    assert await server.app[GW_NATS].wait_ready(10)
    healthy = GaiaClient(str(server.make_url("")).rstrip("/"), token("bob"), EXPERIENCE)
    await healthy.connect()
    sock = await raw_ws_connect(server.port, f"/ws/experience?experience={EXPERIENCE}&token={token('slowpoke')}")
    registry = server.app[REGISTRY]
    await eventually(lambda: registry.count_for("slowpoke") == 1)
    nc = await connect_tool(nats_server.url_as("kb"))  # publishing as kb would
    js = nc.jetstream()
    filler = "x" * 16000
    for version in range(2000):
        await js.publish(f"world.updates.exp.{EXPERIENCE}", broadcast(version, filler, only=["slowpoke"]))
        if registry.count_for("slowpoke") == 0:
            break
    await eventually(lambda: registry.count_for("slowpoke") == 0)
    assert registry.closed_by_code[4408] == 1
    assert await healthy.ping() > 0
    assert (await healthy.act("go", destination="main_room"))["success"]
    assert (await healthy.next("world_update"))["user_id"] == "bob"
    sock.close()
    await nc.close()
    await healthy.close()


async def test_shutdown_closes_sessions_with_1001(players, gateway_server) -> None:
    alice = await players("alice")
    await gateway_server.close()
    assert await alice.wait_closed() == 1001


async def test_sessions_connecting_at_once_get_their_snapshots_from_one_kb_request(gateway_server, token) -> None:
    from gateway.keys import KB
    batcher = gateway_server.app[KB].batcher
    before = batcher.requests
    base = str(gateway_server.make_url("")).rstrip("/")
    clients = [GaiaClient(base, token(f"storm{i}"), EXPERIENCE) for i in range(40)]
    await asyncio.gather(*(c.connect() for c in clients))
    views = await asyncio.gather(*(c.next("area_of_interest") for c in clients))
    assert all(v["type"] == "area_of_interest" for v in views)
    assert batcher.requests - before < 40  # sessions asking in the same turn shared a request
    await asyncio.gather(*(c.close() for c in clients))


async def test_no_event_reaches_a_connecting_player_before_its_snapshot(gateway_server, nats_server, token) -> None:
    """Events flow all the while 40 players connect: for each, `area_of_interest` comes before any event
    (an event that arrives while the stream opens waits behind the snapshot)."""
    nc = await connect_tool(nats_server.url_as("kb"))
    connecting = True
    published = 0

    async def publish() -> None:  # core publishes into the stream, flushed one by one: a steady flow
        nonlocal published
        while connecting:
            await nc.publish(f"world.updates.exp.{EXPERIENCE}", broadcast(1000 + published))
            await nc.flush()
            published += 1

    async def first_frames(user: str, http: aiohttp.ClientSession) -> list[str]:
        url = gateway_server.make_url(f"/ws/experience?experience={EXPERIENCE}&token={token(user)}")
        async with http.ws_connect(url) as ws:
            types: list[str] = []
            while "area_of_interest" not in types:
                types.append((await ws.receive_json(timeout=10))["type"])
            return types

    publisher = asyncio.create_task(publish())
    try:
        async with aiohttp.ClientSession() as http:
            orders = await asyncio.gather(*(first_frames(f"p{i}", http) for i in range(40)))
    finally:
        connecting = False
        await publisher
        await nc.close()
    assert published > 5, "events flowed while the players connected"
    assert all(order[0] == "connected" and order[-1] == "area_of_interest" and "world_update" not in order
               for order in orders), [o for o in orders if "world_update" in o][:3]
