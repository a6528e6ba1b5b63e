"""No one gets in where they don't belong, bad input never crashes anything, tokens never leak."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from gateway.keys import REGISTRY
from harness.client.ws import GaiaClient
from tests.helpers import EXPERIENCE, eventually

FUZZ = {"inputs": 0, "errors": 0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["action", "ping", "resume", "get_state", "x"])},
                          optional={"id": json_values, "action": st.text(max_size=20) | json_values,
                                    "instance_id": json_values, "last_seq": st.integers() | json_values,
                                    "destination": json_values}).map(json.dumps),
    st.integers(min_value=1, max_value=200).map(lambda depth: "[" * depth + "]" * depth),
)


def ws_url(server, query: str) -> str:
    return str(server.make_url("/ws/experience")).replace("http", "ws", 1) + query


async def gateway(aiohttp_server, gateway_settings, **overrides):
    server = await aiohttp_server(create_gateway(replace(gateway_settings, **overrides), "gwsec"))
    assert await server.app[GW_NATS].wait_ready(10)
    return server


@pytest.mark.parametrize("make", [
    lambda s: jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, key=None, algorithm="none"),
    lambda s: jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS512"),
    lambda s: jwt.encode({"sub": "eve"}, s.jwt_secret, algorithm="HS256"),
    lambda s: jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, "another-secret-of-enough-length!",
                         algorithm="HS256"),
    lambda s: jwt.encode({"sub": "eve.>", "exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS256"),
    lambda s: jwt.encode({"sub": "eve", "exp": int(time.time()) + 60, "nbf": int(time.time()) + 600},
                         s.jwt_secret, algorithm="HS256"),
])
async def test_forged_or_unusable_tokens_close_4401(gateway_server, settings, make) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(gateway_server, f"?experience={EXPERIENCE}&token={make(settings)}")) as ws:
            assert (await ws.receive()).data == 4401


async def test_token_expiring_mid_session_closes_4401(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, jwt_leeway_s=0.0)
    async with GaiaClient(str(server.make_url("")).rstrip("/"), token("alice", 2.0), EXPERIENCE) as alice:
        assert await alice.wait_closed(timeout=10) == 4401


async def test_users_receive_only_their_own_copies_and_cannot_act_as_others(players, kb_server) -> None:
    alice, bob = await players("alice"), await players("bob")
    await eventually(lambda: {"alice", "bob"} <= kb_server.app[__import__("kb.keys").keys.PRESENCE].present_users(EXPERIENCE))
    await alice.send({"type": "action", "id": 1, "action": "go", "destination": "main_room", "user_id": "bob"})
    assert (await alice.next("action_response"))["success"]
    await bob.next("world_update")
    assert bob.world.view["player"]["current_area"] == "entrance", "alice could not move bob"
    assert {f["user_id"] for f in alice.frames + bob.frames if f["type"] == "world_update"} == {"alice"} | {"bob"}
    assert all(f["user_id"] == "alice" for f in alice.frames if f["type"] == "world_update")
    assert all(f["user_id"] == "bob" for f in bob.frames if f["type"] == "world_update")
    assert not [f for f in bob.frames if f["type"] == "world_update" and any(
        c.get("path") == "player.current_area" for c in f["changes"])], "alice's private change stays hers"


async def test_oversized_frame_closes_4413(players, gateway_settings) -> None:
    alice = await players("alice")
    await alice._ws.send_str("x" * (gateway_settings.max_frame_bytes + 10))
    assert await alice.wait_closed() == 4413


async def test_flooding_gets_rate_limited_then_4429(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, msg_rate_per_s=5.0, msg_burst=5)
    async with GaiaClient(str(server.make_url("")).rstrip("/"), token("spam"), EXPERIENCE) as spam:
        for _ in range(40):
            await spam.send({"type": "ping", "timestamp": 1})
        assert await spam.wait_closed() == 4429
    assert any(f.get("code") == "rate_limited" for f in spam.frames)


async def test_sessions_per_user_are_capped_4409(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, max_connections_per_user=2)
    base = str(server.make_url("")).rstrip("/")
    first, second = GaiaClient(base, token("al"), EXPERIENCE), GaiaClient(base, token("al"), EXPERIENCE)
    await first.connect()
    await second.connect()
    third = GaiaClient(base, token("al"), EXPERIENCE)
    await third.connect(wait_for=None)
    assert await third.wait_closed() == 4409
    for c in (first, second, third):
        await c.close()


async def test_handshake_rate_per_ip_and_origin_allow_list(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, handshakes_per_ip_per_s=0.01, handshake_burst=2,
                           allowed_origins=("https://game.example",))
    url = ws_url(server, f"?experience={EXPERIENCE}&token={token('o')}")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        for _ in range(2):
            async with http.ws_connect(url, origin="https://game.example"):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as limited:
            await http.ws_connect(url)
        assert limited.value.status == 429


async def test_sse_streams_per_user_are_capped(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, max_sse_per_user=1)
    url = server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('s')}")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as first:
            assert first.status == 200
            await eventually(lambda: server.app[REGISTRY].count_for("s") == 1)
            async with http.get(url) as second:
                assert second.status == 429


async def test_tokens_never_reach_the_logs(players, gateway_server, token, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token("alice")
    alice = await players("alice")
    assert alice.token == secret
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(gateway_server, f"?experience={EXPERIENCE}&token={secret}x")) as ws:
            await ws.receive()
    await alice.close()
    assert secret not in caplog.text and secret.split(".")[2] not in caplog.text


@hsettings(max_examples=400, deadline=None, derandomize=True, database=None,
           suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=1, max_size=5))
async def test_fuzzed_frames_get_clear_errors_and_nothing_breaks(batch, fuzz_target) -> None:
    client, other = fuzz_target
    for frame in batch:
        if isinstance(frame, bytes):
            await client._ws.send_bytes(frame)
        else:
            await client._ws.send_str(frame)
        FUZZ["inputs"] += 1
    assert await client.ping(timeout=10) > 0, "the fuzzed session still answers"
    assert client.is_open


@pytest.fixture
async def fuzz_target(aiohttp_server, gateway_settings, token):
    # The parser is what is fuzzed here, not the budgets (tests/system/test_hostile.py has those).
    server = await gateway(aiohttp_server, gateway_settings, msg_rate_per_s=1e6, msg_burst=10**6,
                           frame_rate_per_s=1e6, frame_burst=10**6, bytes_per_s=1e9, bytes_burst=10**9)
    base = str(server.make_url("")).rstrip("/")
    client, other = GaiaClient(base, token("fuzzer"), EXPERIENCE), GaiaClient(base, token("bystander"), EXPERIENCE)
    await client.connect()
    await other.connect()
    yield client, other
    assert other.is_open and await other.ping() > 0, "other sessions keep working"
    assert client.is_open, "the fuzzed session was never dropped for bad input"
    codes = {f.get("code") for f in client.frames if f["type"] == "error"}
    assert "internal_error" not in codes, "every bad input maps to a clear error code"
    FUZZ["errors"] = sum(1 for f in client.frames if f["type"] == "error")
    print(f"\nfuzz: {FUZZ['inputs']} frames sent, {FUZZ['errors']} error frames, 0 crashes")
    await client.close()
    await other.close()


async def test_rs256_tokens_verified_with_keys_from_a_jwks_url(aiohttp_server, gateway_settings) -> None:
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    ours, foreign = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwk = {**RSAAlgorithm.to_jwk(ours.public_key(), as_dict=True), "kid": "k1", "use": "sig", "alg": "RS256"}
    jwks_app = web.Application()
    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})
    jwks_app.router.add_get("/jwks.json", jwks)
    jwks = await aiohttp_server(jwks_app)
    server = await gateway(aiohttp_server, gateway_settings, jwt_algorithm="RS256",
                           jwt_jwks_url=str(jwks.make_url("/jwks.json")))
    claims = {"sub": "rsa-user", "exp": int(time.time()) + 60}

    def sign(key, algorithm="RS256") -> str:
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": "k1"})

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(server, f"?experience={EXPERIENCE}&token={sign(ours)}")) as ws:
            assert (await ws.receive_json())["type"] == "connected"
        for bad in (sign(foreign), sign(gateway_settings.jwt_secret, "HS256")):
            async with http.ws_connect(ws_url(server, f"?experience={EXPERIENCE}&token={bad}")) as ws:
                assert (await ws.receive()).data == 4401


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={
        "user_id": json_values, "action": st.sampled_from(["go", "collect_item", "talk", "fly"]) | json_values,
        "instance_id": json_values, "destination": json_values, "npc_id": json_values,
        "message": json_values, "experience": st.just(EXPERIENCE) | json_values, "stream": json_values,
    }).map(lambda d: json.dumps(d).encode()),
)
HTTP_FUZZ = {"kb": 0, "chat": 0}


@hsettings(max_examples=150, deadline=None, derandomize=True, database=None,
           suppress_health_check=list(HealthCheck))
@given(body=bodies)
async def test_fuzzed_http_bodies_never_get_a_500(body, http_fuzz_target) -> None:
    http, kb_url, chat_url, auth = http_fuzz_target
    async with http.post(kb_url, data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status in (200, 400, 413, 422), (resp.status, body, await resp.text())
        HTTP_FUZZ["kb"] += 1
    async with http.post(chat_url, data=body, headers=auth) as resp:
        assert resp.status in (200, 400, 404, 422), (resp.status, body)
        await resp.read()  # a stream that started must also end
        HTTP_FUZZ["chat"] += 1


@pytest.fixture
async def http_fuzz_target(kb_server, aiohttp_server, gateway_settings, settings, token):
    # The body parser is what is fuzzed here, not the chat budget (tested in tests/system/test_trust.py) nor
    # the handshake bucket every chat POST draws on (tests/gateway/test_admission.py).
    gateway_server = await gateway(aiohttp_server, gateway_settings, chats_per_user_per_s=1e6, chat_burst=10**6,
                                   handshakes_per_ip_per_s=1e6, handshake_burst=10**6)
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        yield (http, str(kb_server.make_url(f"/experiences/{EXPERIENCE}/actions")),
               str(gateway_server.make_url("/chat/unified")), {"Authorization": f"Bearer {token('fuzz')}"})
        for server in (kb_server, gateway_server):
            async with http.get(server.make_url("/health")) as resp:
                assert resp.status == 200, "still serving after the fuzz run"
    print(f"\nhttp fuzz: {HTTP_FUZZ['kb']} kb bodies, {HTTP_FUZZ['chat']} chat bodies, 0 server errors")
