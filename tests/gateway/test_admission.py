"""One admission for every transport: the same checks in the same order, each refusal in the transport's terms."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.app import create_app as create_gateway
from gateway.edge.admission import CHECKS, TRANSPORTS, Edge, Refusal
from gateway.keys import EDGE
from gateway.keys import NATS as GW_NATS
from shared.auth import Identity, TokenVerifier, issue_token
from shared.config import Settings
from shared.schemas.errors import CloseCode, ErrorCode
from tests.helpers import EXPERIENCE, eventually

ADDRESS, ELSEWHERE = "203.0.113.7", "198.51.100.9"
GOOD, EVIL = "https://game.example", "https://evil.example"
SETTINGS = Settings(env="dev", allowed_origins=(GOOD,))


async def kb_serves() -> set[str]:
    return {EXPERIENCE}


def make_edge(**overrides: Any) -> Edge:
    settings = replace(SETTINGS, **overrides)
    return Edge(settings, TokenVerifier(settings), kb_serves)


def request(user: str | None = "alice", origin: str | None = GOOD, remote: str = ADDRESS,
            token: str | None = None, in_query: bool = False) -> web.Request:
    """A request as the edge sees it: alice's token in the Authorization header (or `?token=`)."""
    token = token or (issue_token(SETTINGS, user) if user else None)
    headers = {"Origin": origin} if origin else {}
    if token and not in_query:
        headers["Authorization"] = f"Bearer {token}"
    path = f"/any?token={token}" if token and in_query else "/any"
    return make_mocked_request("GET", path, headers=headers).clone(remote=remote)


async def first_refusal(transport: str, failing: set[str]) -> str | None:
    """Alice asks from ADDRESS with every check in `failing` made to fail: the check that refuses her
    (None: she is admitted)."""
    edge = make_edge(handshakes_per_ip_per_s=0.001, handshake_burst=2, max_connections_per_address=1,
                     max_connections_per_user=1)
    async with contextlib.AsyncExitStack() as held:
        if "user" in failing:  # she already holds her one connection, from another address
            assert isinstance(await held.enter_async_context(
                edge.admit(request(remote=ELSEWHERE), "websocket", EXPERIENCE)), Identity)
        if "address" in failing:  # the address already holds its one connection (bob's)
            assert isinstance(await held.enter_async_context(
                edge.admit(request("bob"), "sse", EXPERIENCE)), Identity)
        if "rate" in failing:
            while edge.handshakes.allow(ADDRESS):
                pass
        asking = request(origin=EVIL if "origin" in failing else GOOD,
                         token="not-a-token" if "token" in failing else None)
        async with edge.admit(asking, transport, "atlantis" if "experience" in failing else EXPERIENCE) as admitted:
            return admitted.check if isinstance(admitted, Refusal) else None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_runs_the_same_checks_in_the_same_order(transport: str) -> None:
    assert CHECKS == ("origin", "rate", "address", "token", "experience", "user")
    refused_by = [await first_refusal(transport, set(CHECKS[first:])) for first in range(len(CHECKS))]
    assert refused_by == list(CHECKS)
    assert await first_refusal(transport, set()) is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_refusal_says_why_in_http_terms(transport: str) -> None:
    expected = {"origin": (403, "forbidden"), "rate": (429, ErrorCode.RATE_LIMITED),
                "address": (429, "too_many_connections"), "token": (401, "unauthorized"),
                "experience": (404, ErrorCode.UNKNOWN_EXPERIENCE), "user": (429, ErrorCode.TOO_MANY_SESSIONS)}
    edge = make_edge(handshakes_per_ip_per_s=0.001, handshake_burst=1)
    async with edge.admit(request(origin=EVIL), transport, EXPERIENCE) as admitted:
        assert isinstance(admitted, Refusal) and (admitted.status, admitted.error) == expected["origin"]
    async with edge.admit(request(), transport, EXPERIENCE) as admitted:  # a refused origin took no token
        assert isinstance(admitted, Identity) and admitted.user_id == "alice"
    async with edge.admit(request(), transport, EXPERIENCE) as admitted:
        assert isinstance(admitted, Refusal) and (admitted.status, admitted.error) == expected["rate"]
    for check, (status, error) in expected.items():
        refusal = await _refused_by(transport, check)
        assert (refusal.check, refusal.status, refusal.error) == (check, status, error)
        response = refusal.response()
        assert response.status == status and response.content_type == "application/json"


async def _refused_by(transport: str, check: str) -> Refusal:
    """Make only `check` fail and return the refusal (for its status and error code)."""
    edge = make_edge(handshakes_per_ip_per_s=0.001, handshake_burst=2, max_connections_per_address=1,
                     max_connections_per_user=1)
    async with contextlib.AsyncExitStack() as held:
        if check == "user":
            await held.enter_async_context(edge.admit(request(remote=ELSEWHERE), "sse", EXPERIENCE))
        if check == "address":
            await held.enter_async_context(edge.admit(request("bob"), "chat", EXPERIENCE))
        if check == "rate":
            while edge.handshakes.allow(ADDRESS):
                pass
        asking = request(origin=EVIL if check == "origin" else GOOD, token="x" if check == "token" else None)
        async with edge.admit(asking, transport, "atlantis" if check == "experience" else EXPERIENCE) as admitted:
            assert isinstance(admitted, Refusal)
            return admitted


async def test_the_experience_is_named_allowed_and_served() -> None:
    edge = make_edge(allowed_experiences=(EXPERIENCE, "elsewhere"))
    refusals = [await edge.experience_refusal(name) for name in ("", "x" * 129, "atlantis", "elsewhere", EXPERIENCE)]
    assert [(r.status, r.error) if r else None for r in refusals] == [
        (400, ErrorCode.INVALID_MESSAGE), (400, ErrorCode.INVALID_MESSAGE), (403, "forbidden"),
        (404, ErrorCode.UNKNOWN_EXPERIENCE), None]


async def test_the_token_may_be_in_the_query_except_on_a_chat_post() -> None:
    edge = make_edge()
    for transport in TRANSPORTS:
        async with edge.admit(request(in_query=True), transport, EXPERIENCE) as admitted:
            if transport == "chat":
                assert isinstance(admitted, Refusal) and admitted.check == "token"
            else:
                assert isinstance(admitted, Identity) and admitted.user_id == "alice"


async def test_a_users_connections_are_counted_once_over_every_transport() -> None:
    edge = make_edge(max_connections_per_user=3)
    async with contextlib.AsyncExitStack() as held:
        for transport in TRANSPORTS:  # one of each, from different addresses: the user's count is what fills
            admitted = await held.enter_async_context(edge.admit(request(remote=f"192.0.2.{len(transport)}"),
                                                                 transport, EXPERIENCE))
            assert isinstance(admitted, Identity)
        assert edge.user_connections("alice") == 3
        assert [edge.user_connections("alice", transport) for transport in TRANSPORTS] == [1, 1, 1]
        for transport in TRANSPORTS:
            async with edge.admit(request(), transport, EXPERIENCE) as admitted:
                assert isinstance(admitted, Refusal) and admitted.error == ErrorCode.TOO_MANY_SESSIONS
        async with edge.admit(request("bob"), "websocket", EXPERIENCE) as admitted:
            assert isinstance(admitted, Identity), "another user is not counted with her"
        assert edge.user_connections("alice") == 3, "refusals hold nothing"
    assert edge.user_connections("alice") == 0 and not edge.users and edge.addresses.count(ADDRESS) == 0


async def test_sse_streams_keep_their_own_cap_inside_the_users_connections() -> None:
    edge = make_edge(max_sse_per_user=1, max_connections_per_user=8)
    async with edge.admit(request(), "sse", EXPERIENCE) as first:
        assert isinstance(first, Identity)
        async with edge.admit(request(), "sse", EXPERIENCE) as second:
            assert isinstance(second, Refusal) and (second.check, second.error) == ("user", "too_many_streams")
        async with edge.admit(request(), "websocket", EXPERIENCE) as ws:
            assert isinstance(ws, Identity)


async def gateway(aiohttp_server: Any, gateway_settings: Settings, **overrides: Any) -> Any:
    server = await aiohttp_server(create_gateway(replace(gateway_settings, **overrides), "gwadmit"))
    assert await server.app[GW_NATS].wait_ready(10)
    return server


def socket_url(server: Any, query: str) -> str:
    return str(server.make_url("/ws/experience")).replace("http", "ws", 1) + query


async def test_a_foreign_origin_is_refused_403_on_every_transport(aiohttp_server, gateway_settings, token) -> None:
    server = await gateway(aiohttp_server, gateway_settings, allowed_origins=(GOOD,))
    ws_url = socket_url(server, f"?experience={EXPERIENCE}&token={token('o')}")
    sse_url = server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('o')}")
    chat_url, chat = server.make_url("/chat/unified"), {"message": "look", "experience": EXPERIENCE, "stream": False}
    auth = {"Authorization": f"Bearer {token('o')}"}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url, origin=EVIL)
        assert refused.value.status == 403
        async with http.get(sse_url, headers={"Origin": EVIL}) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
        async with http.post(chat_url, json=chat, headers={**auth, "Origin": EVIL}) as resp:
            assert resp.status == 403 and (await resp.json()) == {"error": "forbidden", "message": "origin not allowed"}
        async with http.post(chat_url, json=chat, headers={**auth, "Origin": GOOD}) as resp:
            assert resp.status == 200 and (await resp.json())["success"]
        async with http.get(sse_url, headers={"Origin": GOOD}) as resp:
            assert resp.status == 200
        async with http.post(chat_url, json=chat, headers=auth) as resp:  # no Origin: not a browser's request
            assert resp.status == 200


async def test_a_user_at_the_limit_is_refused_on_every_transport(aiohttp_server, gateway_settings, token) -> None:
    # a short keepalive: a stream learns its client left at its next ping
    server = await gateway(aiohttp_server, gateway_settings, max_connections_per_user=2, sse_keepalive_s=0.2)
    edge = server.app[EDGE]
    ws_url = socket_url(server, f"?experience={EXPERIENCE}&token={token('al')}")
    sse_url = server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('al')}")
    chat_url, chat = server.make_url("/chat/unified"), {"message": "look", "experience": EXPERIENCE, "stream": False}
    auth = {"Authorization": f"Bearer {token('al')}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url) as ws, http.get(sse_url) as stream:
            assert (await ws.receive_json())["type"] == "connected" and stream.status == 200
            assert edge.user_connections("al") == 2
            async with http.ws_connect(ws_url) as third:
                assert (await third.receive()).data == CloseCode.TOO_MANY_SESSIONS
            async with http.get(sse_url) as resp:
                assert resp.status == 429 and (await resp.json())["error"] == ErrorCode.TOO_MANY_SESSIONS
            async with http.post(chat_url, json=chat, headers=auth) as resp:
                assert resp.status == 429 and (await resp.json())["error"] == ErrorCode.TOO_MANY_SESSIONS
            stream.close()
            await eventually(lambda: edge.user_connections("al") == 1)
            async with http.post(chat_url, json=chat, headers=auth) as resp:  # the stream's place is free again
                assert resp.status == 200
    await eventually(lambda: edge.user_connections("al") == 0)


@pytest.mark.parametrize("sub", ["world", "louisa"])
async def test_a_token_for_the_world_or_an_npc_is_refused_on_every_transport(gateway_server, token, sub) -> None:
    """kb names the ids it keeps (its /health); a player holding one would act as the world itself."""
    ws_url = socket_url(gateway_server, f"?experience={EXPERIENCE}&token={token(sub)}")
    sse_url = gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token(sub)}")
    chat = {"message": "look", "experience": EXPERIENCE, "stream": False}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url) as ws:
            assert (await ws.receive()).data == CloseCode.UNAUTHORIZED
        async with http.get(sse_url) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == ErrorCode.RESERVED_USER_ID
        async with http.post(gateway_server.make_url("/chat/unified"), json=chat,
                             headers={"Authorization": f"Bearer {token(sub)}"}) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == ErrorCode.RESERVED_USER_ID
        async with http.ws_connect(socket_url(gateway_server, f"?experience={EXPERIENCE}&token={token('ann')}")) as ws:
            assert (await ws.receive_json())["type"] == "connected", "an ordinary player still gets in"
