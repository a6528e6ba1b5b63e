"""Identities are matched whole, tokens have a bounded life, and what reaches other players is only theirs."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import nats
import orjson

from shared.config import Settings
from shared.natsconn import connect_tool
from tests.helpers import EXPERIENCE, eventually, published_all


def signed(settings: Settings, **claims) -> str:
    return jwt.encode({"sub": "x", "exp": int(time.time()) + 60, **claims}, settings.jwt_secret,
                      algorithm=settings.jwt_algorithm)


async def test_a_user_id_with_a_trailing_newline_is_refused_and_sees_nobodys_world(gateway_server, players,
                                                                                  settings) -> None:
    victim = await players("victim")
    assert (await victim.act("go", destination="main_room"))["success"]
    url = str(gateway_server.make_url("/ws/experience")).replace("http", "ws", 1)
    token = signed(settings, sub="victim\n")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?experience={EXPERIENCE}&token={token}") as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401


async def test_kb_refuses_a_user_id_that_is_not_one_whole_token(kb_server, kb_http) -> None:
    base = str(kb_server.make_url(f"/experiences/{EXPERIENCE}"))
    async with kb_http.get(f"{base}/players/victim%0A/state") as resp:
        assert resp.status == 422
    async with kb_http.post(f"{base}/actions", json={"user_id": "victim\n", "action": "examine"}) as resp:
        assert resp.status == 422


async def test_an_exp_beyond_the_maximum_lifetime_is_401_not_500(gateway_server, settings) -> None:
    async with aiohttp.ClientSession() as http:
        for exp in (10**400, int(time.time()) + settings.jwt_max_lifetime_s + 3600):
            token = signed(settings, exp=exp)
            async with http.get(gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token}")) as r:
                assert r.status == 401, exp


async def test_a_ping_nested_deeper_than_can_be_echoed_gets_an_error_and_the_session_lives(players) -> None:
    alice = await players("alice")
    deep = "[" * 1000 + "1" + "]" * 1000  # orjson reads it; no encoder could echo it
    await alice._ws.send_str('{"type": "ping", "timestamp": %s}' % deep)
    error = await alice.next("error")
    assert error["code"] == "invalid_message" and "timestamp" in error["details"]
    assert await alice.ping() > 0


async def test_an_action_id_of_128_characters_works(players) -> None:
    alice = await players("alice")
    long_id = "a" * 128
    await alice.send({"type": "action", "id": long_id, "action": "go", "destination": "main_room"})
    answer = await alice.next("action_response")
    assert answer["id"] == long_id and answer["success"]


async def test_other_players_never_see_the_actors_trace_or_connection(players, settings, kb_server, nats_server) -> None:
    alice, bob = await players("alice"), await players("bob")
    await alice.send({"type": "action", "id": "secret-note-for-me", "action": "go", "destination": "main_room"})
    seen = await bob.next("world_update")
    assert seen["actor_id"] == "alice"
    trace = seen["metadata"]["trace_id"]
    assert "secret" not in trace and alice.connected["connection_id"] not in trace
    nc = await connect_tool(nats_server.url_as("gateway"))  # nor does anyone reading the bus
    stored = await nc.jetstream().get_msg(settings.stream_name, seen["seq"], direct=True)
    await nc.close()
    assert b"secret" not in stored.data and orjson.loads(stored.data)["metadata"]["trace_id"] == trace


async def test_a_forged_publish_under_kbs_message_id_is_an_alarm_and_kbs_event_still_lands(outbox_parts,
                                                                                          nats_server) -> None:
    import asyncio

    from kb.outbox import OutboxPublisher
    settings, store, link = outbox_parts
    ours, forged = b'{"n": "ours"}', b'{"n": "forged"}'
    forger = await nats.connect(nats_server.url_as("operator"))  # someone with rights on the bus it should not have
    await forger.jetstream().publish("world.updates.exp.x", forged, headers={"Nats-Msg-Id": "x:1:abc"})
    await forger.close()
    await store.commit(EXPERIENCE, 0, None, [("x:1:abc", "world.updates.exp.x", ours)], 0)
    publisher = OutboxPublisher(store, link, settings)
    task = asyncio.create_task(publisher.run())
    publisher.notify()
    await published_all(store)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert publisher.forged == 1
    reader = await connect_tool(nats_server.url_as("gateway"))
    assert (await reader.jetstream().get_last_msg("WORLD_UPDATES", "world.updates.exp.x", direct=True)).data == ours
    await reader.close()


async def test_the_bus_refuses_a_client_without_credentials(nats_server) -> None:
    import pytest
    with pytest.raises(Exception) as refused:
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=2)
    assert "authorization" in str(refused.value).lower()


async def test_a_gateways_credentials_cannot_put_anything_before_a_player(players, nats_server, settings) -> None:
    alice, bob = await players("alice"), await players("bob")
    errors: list[Exception] = []

    async def seen(exc: Exception) -> None:
        errors.append(exc)
    gateway = await connect_tool(nats_server.url_as("gateway"), error_cb=seen)
    forged = orjson.dumps({"type": "world_update", "version": "0.4", "experience": EXPERIENCE, "actor_id": "world",
                           "base_version": 0, "snapshot_version": 99, "timestamp": 1, "audience": [None],
                           "changes": [{"operation": "update", "area_id": None, "path": "environment.x", "value": 1}]})
    for subject in (f"world.updates.exp.{EXPERIENCE}", f"live.world.updates.exp.{EXPERIENCE}"):
        await gateway.publish(subject, forged, headers={"Nats-Sequence": "999999", "Nats-Last-Sequence": "0"})
    await gateway.flush()
    await eventually(lambda: len([e for e in errors if "permissions violation" in str(e)]) == 2)
    await gateway.close()
    assert (await bob.act("go", destination="main_room"))["success"]
    update = await alice.next("world_update")
    assert update["actor_id"] == "bob" and update["snapshot_version"] != 99  # the first thing alice got is real
    reader = await connect_tool(nats_server.url_as("gateway"))
    last = await reader.jetstream().get_last_msg(settings.stream_name, f"world.updates.exp.{EXPERIENCE}", direct=True)
    await reader.close()
    assert b'"snapshot_version":99' not in last.data


def test_a_service_refuses_to_start_on_the_public_dev_secrets_outside_dev(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from harness.system.procs import free_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    for module in ("gateway", "kb"):
        done = subprocess.run([sys.executable, "-m", module, "--port", str(free_port())], env=env, timeout=30,
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 0 and "GAIA_JWT_SECRET" in done.stderr and "GAIA_ENV=dev" in done.stderr


async def test_presence_reports_stay_bounded_while_kb_is_away() -> None:
    from gateway.kbclient import KbClient
    from gateway.presence import PresenceReporter
    kb = KbClient(Settings(kb_url="http://127.0.0.1:9", kb_timeout_s=0.5))
    reporter = PresenceReporter(kb, "gw", renew_s=30.0, max_pending=100)
    for i in range(1000):
        reporter.join(f"s{i}", f"u{i}", EXPERIENCE)
    await reporter.flush()  # kb is away: everything is kept for later, but only so much
    assert len(reporter._pending["join"]) == 100 and reporter._pending["join"][-1]["session_id"] == "s999"
    assert len(reporter.live) == 1000  # the renewals still carry every live session
    await kb.close()


async def test_the_presence_loop_survives_an_unexpected_error() -> None:
    import asyncio

    from gateway.kbclient import KbClient
    from gateway.presence import PresenceReporter
    kb = KbClient(Settings(kb_url="http://127.0.0.1:9"))
    reporter = PresenceReporter(kb, "gw", renew_s=0.05)
    calls = []

    async def flaky(renew: bool = False) -> None:  # a bug that strikes once
        calls.append(renew)
        if len(calls) == 1:
            raise RuntimeError("boom")
    reporter.flush = flaky
    task = asyncio.create_task(reporter.run())
    await eventually(lambda: len(calls) >= 3, timeout=5)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await kb.close()


async def test_kbs_presence_sweep_survives_an_unexpected_error(kb_server) -> None:
    from kb.keys import PRESENCE
    book = kb_server.app[PRESENCE]
    real, calls = book.expire, []

    def flaky(now: float):  # a bug that strikes once
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(now)
    book.expire = flaky
    await eventually(lambda: len(calls) >= 2, timeout=5)  # the sweep ran again after the error


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    from gateway.edge.addresses import client_address, parse_networks
    proxies = parse_networks(("10.0.0.0/8", "127.0.0.1"))
    assert client_address("127.0.0.1", "203.0.113.7", proxies) == "203.0.113.7"
    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.1.2.3", proxies) == "203.0.113.7"  # left: made up
    assert client_address("198.51.100.9", "203.0.113.7", proxies) == "198.51.100.9"  # not a proxy: header ignored
    assert client_address("127.0.0.1", "not-an-address", proxies) == "127.0.0.1"


async def test_behind_a_trusted_proxy_the_handshake_limit_is_per_client_not_per_proxy(
        aiohttp_server, gateway_settings, token) -> None:
    from dataclasses import replace

    import aiohttp

    from gateway.app import create_app as create_gateway
    settings = replace(gateway_settings, trusted_proxies=("127.0.0.1",), handshakes_per_ip_per_s=0.001,
                       handshake_burst=2)
    server = await aiohttp_server(create_gateway(settings, "gwproxy"))
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1) + f"?experience={EXPERIENCE}"

    async def status(client: str) -> int:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(f"{url}&token={token('p')}", headers={"X-Forwarded-For": client}):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
    assert [await status("203.0.113.7") for _ in range(3)] == [101, 101, 429]
    assert await status("203.0.113.8") == 101  # another player behind the same proxy is not locked out


async def test_one_address_holds_at_most_its_share_of_connections(aiohttp_server, gateway_settings, token) -> None:
    from dataclasses import replace

    import aiohttp

    from gateway.app import create_app as create_gateway
    server = await aiohttp_server(create_gateway(replace(gateway_settings, max_connections_per_address=2), "gwcap"))
    url = str(server.make_url("/ws/experience")).replace("http", "ws", 1) + f"?experience={EXPERIENCE}"
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(f"{url}&token={token('a')}")
        second = await http.ws_connect(f"{url}&token={token('b')}")
        try:
            await http.ws_connect(f"{url}&token={token('c')}")
            raise AssertionError("a third connection from one address was let in")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429
        await first.close()
        await eventually(lambda: server.app[__import__("gateway.keys").keys.EDGE].addresses.count("127.0.0.1") == 1)
        third = await http.ws_connect(f"{url}&token={token('c')}")  # a freed place is free again
        await asyncio.gather(second.close(), third.close())


async def test_get_state_and_resume_have_a_budget(players) -> None:
    alice = await players("alice")
    for _ in range(5):
        await alice.send({"type": "get_state"})
    await alice.send({"type": "resume", "last_seq": 0})
    error = await alice.next("error")
    assert error["code"] == "rate_limited" and "resume" in error["message"]
    assert await alice.ping() > 0


async def test_chat_requests_have_a_budget_per_user(gateway_server, token) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(12):
            async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('c')}"},
                                 json={"message": "look", "experience": EXPERIENCE, "stream": False}) as resp:
                statuses.append(resp.status)
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]


async def test_a_chat_kb_refuses_answers_422_not_500(gateway_server, token) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('c')}"},
                             json={"message": "take " + "x" * 300, "experience": EXPERIENCE, "stream": False}) as resp:
            assert resp.status == 422 and (await resp.json())["error"] == "invalid_message"


async def test_nats_client_errors_are_warnings_not_debug(caplog) -> None:
    import logging

    from shared.natsconn import NatsLink
    link = NatsLink(Settings(), "test")
    with caplog.at_level(logging.WARNING, logger="shared.natsconn"):
        await link._on_error(RuntimeError("nats: slow consumer, messages dropped on sid 7"))
    assert "slow consumer" in caplog.text and link.errors == 1


async def test_an_in_socket_resume_during_a_burst_replays_everything_after_its_cursor(players, nats_server) -> None:
    from tests.helpers import publish_broadcasts
    alice = await players("alice")
    [cursor] = await publish_broadcasts(nats_server.url_as("kb"), 1)
    await alice.next("world_update")
    burst = asyncio.create_task(publish_broadcasts(nats_server.url_as("kb"), 200, first_version=5000))
    await asyncio.sleep(0.01)
    await alice.send({"type": "resume", "last_seq": cursor})  # while the old stream is still receiving
    published = await burst
    resumed = await alice.next("resumed", timeout=10)
    after = alice.frames[alice.frames.index(resumed) - resumed["replayed"]:]
    while published[-1] not in [f.get("seq") for f in after]:
        await alice.next("world_update", timeout=10)
        after = alice.frames[alice.frames.index(resumed) - resumed["replayed"]:]
    seqs = [f["seq"] for f in after if f.get("type") == "world_update"]
    assert seqs == sorted(set(seqs)) and set(published) <= set(seqs), "nothing dropped as already seen, nothing twice"
