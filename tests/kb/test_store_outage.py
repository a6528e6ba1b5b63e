"""kb while its PostgreSQL restarts: 503 `store_unavailable` and one log line, then service again."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from harness.system.pg import PostgresServer
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from shared.config import Settings
from tests.helpers import fresh_database

EXPERIENCE = "wylding-woods"


async def act(http: aiohttp.ClientSession, base: str, user: str, where: str = "entrance") -> aiohttp.ClientResponse:
    """A step that commits (it moves the player) when `where` is not where the player stands."""
    body = {"user_id": user, "action": "go", "destination": where, "trace_id": "outage"}
    async with http.post(f"{base}/experiences/{EXPERIENCE}/actions", json=body) as resp:
        await resp.read()
        return resp


async def test_postgres_restart_answers_503_store_unavailable_without_tracebacks_then_serves_again(
        aiohttp_server: Any, settings: Settings, kb_http: aiohttp.ClientSession, postgres: PostgresServer,
        caplog: pytest.LogCaptureFixture) -> None:
    own = PostgresServer().start()  # the shared server stays up for the other tests
    try:
        kb = await aiohttp_server(create_kb(replace(settings, kb_store=await fresh_database(own))))
        assert await kb.app[KB_NATS].wait_ready(10)
        base = str(kb.make_url("")).rstrip("/")
        assert (await act(kb_http, base, "ann")).status == 200
        own.stop_server("fast")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            refused = [await act(kb_http, base, "ann", "main_room") for _ in range(3)]
        assert [r.status for r in refused] == [503, 503, 503]
        assert refused[0].headers["Retry-After"] == "1"
        outage_lines = [r for r in caplog.records if "store cannot be reached" in r.getMessage()]
        assert len(outage_lines) == 1 and not any(r.exc_info for r in caplog.records)
        own.start_server()
        answered = None
        for _ in range(50):  # the pool reconnects on its own; each try is a real request
            answered = await act(kb_http, base, "ann", "main_room")
            if answered.status == 200:
                break
        assert answered is not None and answered.status == 200
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        own.stop()
