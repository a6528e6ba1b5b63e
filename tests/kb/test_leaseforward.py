"""kb.leaseforward: in lease mode the kb that does not own a world hands its requests to the owner, only once."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from harness.system.procs import free_port
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from kb.keys import OWNERSHIP, PRESENCE, WORLDS
from kb.leaseforward import FORWARDED
from kb.ownership import WorldOwnership
from shared.config import Settings
from shared.natsconn import NatsLink
from tests.helpers import EXPERIENCE, eventually

ACTIONS = f"/experiences/{EXPERIENCE}/actions"
GO_MAIN = {"user_id": "alice", "action": "go", "destination": "main_room"}
StartKb = Callable[[], Awaitable[TestServer]]


@pytest.fixture
def lease_settings(settings: Settings) -> Settings:
    """kb in lease mode: a short lease (a request waits at most ttl + 1 s for an owner) and forward timeout."""
    return replace(settings, kb_ownership="lease", kb_lease_ttl_s=2.0, kb_timeout_s=2.0)


@pytest.fixture
def start_kb(aiohttp_server: Any, lease_settings: Settings) -> StartKb:
    """start_kb() -> a kb app in lease mode on a port of its own, advertising that port, on the shared store."""
    async def start() -> TestServer:
        port = free_port()
        mine = replace(lease_settings, kb_port=port, kb_advertise_url=f"http://127.0.0.1:{port}")
        server = await aiohttp_server(create_kb(mine), port=port)
        assert await server.app[KB_NATS].wait_ready(10), "kb did not reach NATS"
        return server
    return start


@pytest.fixture
async def hold_lease(lease_settings: Settings) -> AsyncIterator[Callable[[str], Awaitable[None]]]:
    """hold_lease(url): keep the world's lease (renewed) naming `url` as its owner, with no kb behind it."""
    held: list[tuple[NatsLink, WorldOwnership, asyncio.Task[None]]] = []

    async def nothing(_: str) -> None:
        return None

    async def hold(url: str) -> None:
        link = NatsLink(lease_settings, "stand-in-owner")
        link.start()
        assert await link.wait_ready(10)
        ownership = WorldOwnership(link, [EXPERIENCE], url, lease_settings.kb_lease_ttl_s, nothing)
        await ownership.hold_all()
        assert ownership.owns(EXPERIENCE)
        held.append((link, ownership, asyncio.create_task(ownership.run())))
    yield hold
    for link, ownership, task in held:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ownership.release()
        await link.close()


async def owner_and_other(start_kb: StartKb) -> tuple[TestServer, TestServer]:
    """Two kb on one nats-server and one store: the first takes the world's lease, the second does not."""
    owner = await start_kb()
    await eventually(lambda: owner.app[OWNERSHIP].owns(EXPERIENCE))
    other = await start_kb()
    assert not other.app[OWNERSHIP].owns(EXPERIENCE)
    return owner, other


async def call(http: aiohttp.ClientSession, server: TestServer, method: str, path: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, server.make_url(path), **kwargs) as resp:
        return resp.status, await resp.json()


def version(server: TestServer) -> int:
    """The world's version in this kb's memory."""
    return server.app[WORLDS][EXPERIENCE].world["version"]


async def test_a_request_to_the_non_owner_is_answered_by_the_owner(start_kb, kb_http) -> None:
    owner, other = await owner_and_other(start_kb)
    status, acted = await call(kb_http, other, "POST", ACTIONS, json=GO_MAIN)
    assert status == 200 and acted["success"] and acted["snapshot_version"] == 1
    assert (version(owner), version(other)) == (1, 0), "the owner committed it, the other kb did not"
    state = f"/experiences/{EXPERIENCE}/players/alice/state"
    via_other, from_owner = await call(kb_http, other, "GET", state), await call(kb_http, owner, "GET", state)
    assert via_other == from_owner and via_other[1]["player"]["current_area"] == "main_room"
    status, _ = await call(kb_http, other, "GET", state + "?session_id=s1&gateway_id=gw1")  # the query goes along
    assert status == 200
    assert owner.app[PRESENCE].is_present(EXPERIENCE, "alice")
    assert not other.app[PRESENCE].is_present(EXPERIENCE, "alice")
    status, missing = await call(kb_http, other, "POST", "/experiences/nowhere/actions", json=GO_MAIN)
    assert (status, missing["error"]) == (404, "unknown_experience")


async def test_a_presence_report_to_the_non_owner_lands_in_the_owners_book(start_kb, kb_http) -> None:
    owner, other = await owner_and_other(start_kb)
    report = {"gateway_id": "gw1", "join": [{"session_id": "s1", "user_id": "bob", "experience": EXPERIENCE}]}
    status, answer = await call(kb_http, other, "POST", "/presence", json=report)
    assert status == 200 and answer["present"] == {EXPERIENCE: 1}
    assert owner.app[PRESENCE].is_present(EXPERIENCE, "bob")
    assert not other.app[PRESENCE].is_present(EXPERIENCE, "bob")


async def test_a_forwarded_request_is_never_forwarded_again(start_kb, kb_http) -> None:
    owner, other = await owner_and_other(start_kb)
    status, body = await call(kb_http, other, "POST", ACTIONS, json=GO_MAIN, headers={FORWARDED: "1"})
    assert (status, body["error"]) == (503, "kb_unavailable")
    assert body["message"] == f"no kb owns {EXPERIENCE!r} right now; retry"
    assert (version(owner), version(other)) == (0, 0), "neither kb applied it"
    status, _ = await call(kb_http, other, "POST", ACTIONS, json=GO_MAIN)  # the same request, not yet forwarded
    assert status == 200 and version(owner) == 1


async def test_an_owner_that_refuses_connections_gives_503_once_the_handover_wait_is_over(
        start_kb, hold_lease, kb_http) -> None:
    await hold_lease(f"http://127.0.0.1:{free_port()}")  # the lease names a port nothing listens on
    other = await start_kb()
    status, body = await call(kb_http, other, "POST", ACTIONS, json=GO_MAIN)
    down = {"error": "kb_unavailable", "message": f"the owner of {EXPERIENCE!r} is down; retry"}
    assert (status, body) == (503, down)
    assert version(other) == 0 and not other.app[OWNERSHIP].owns(EXPERIENCE)


async def test_an_owner_that_does_not_answer_gives_503_and_was_sent_the_request_marked_forwarded(
        start_kb, hold_lease, kb_http, aiohttp_server, lease_settings) -> None:
    seen: list[tuple[str, dict[str, str], Any]] = []
    answer = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers), await request.json()))
        await answer.wait()
        return web.Response()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", silent)
    stand_in = await aiohttp_server(app)
    await hold_lease(str(stand_in.make_url("")).rstrip("/"))
    other = await start_kb()
    try:
        status, body = await call(kb_http, other, "POST", ACTIONS + "?trace=1", json=GO_MAIN)
    finally:
        answer.set()
    assert (status, body) == (503, {"error": "kb_unavailable", "message": "the kb that owns this world did not answer"})
    [(path, headers, sent)] = seen
    assert (path, sent) == (ACTIONS + "?trace=1", GO_MAIN)
    assert headers[FORWARDED] == "1" and headers["X-API-Key"] == lease_settings.kb_api_key
    assert version(other) == 0
