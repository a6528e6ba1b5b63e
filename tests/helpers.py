"""What tests share besides fixtures (those are in the conftest.py files): waiting, canned events, tools."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import pytest
from aiohttp.test_utils import TestServer

from harness.system.llmserver import ModelServer, missing
from harness.system.pg import PostgresServer, pg_bin
from shared.natsconn import connect_tool

EXPERIENCE = "wylding-woods"
SUBJECT = f"world.updates.exp.{EXPERIENCE}"
ADMIN_TOKEN = "test-admin-token"  # the tests' gateways answer /metrics and /debug/ to this (GAIA_ADMIN_TOKEN)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEND_TICK_MS = 50.0  # the tick the guarantees marked `also_with_send_tick` run with again (tests/conftest.py)
EVENT = {
    "type": "world_update", "version": "0.4", "experience": "wylding-woods", "user_id": "u1", "actor_id": "u1",
    "base_version": 41, "snapshot_version": 42, "timestamp": 1764000000123,
    "changes": [
        {"operation": "remove", "area_id": "main_room", "spot_id": "shelf_1", "instance_id": "dream_bottle_1"},
        {"operation": "add", "area_id": None, "path": "player.inventory", "instance_id": "dream_bottle_1",
         "template_id": "dream_bottle", "item": {"instance_id": "dream_bottle_1", "template_id": "dream_bottle",
                                                  "type": "collectible", "semantic_name": "dream bottle",
                                                  "description": "...", "visible": True, "state": {}}}],
    "metadata": {"source": "kb", "trace_id": "t"},
}


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
    return orjson.dumps({
        "type": "world_update", "version": "0.4", "experience": EXPERIENCE, "actor_id": "world",
        "base_version": version, "snapshot_version": version + 1, "timestamp": 1,
        "changes": [{"operation": "update", "area_id": None, "path": "environment.note", "value": note}],
        "audience": [None if only is None else {"only": only}]})


async def published_all(store: Any) -> None:
    """Wait until the outbox has nothing left to publish."""
    async def empty() -> bool:
        return await store.outbox_depth() == 0
    await eventually(empty, timeout=4)


async def publish_broadcasts(url: str, count: int, first_version: int = 1000, note: str = "n") -> list[int]:
    """Publish `count` broadcasts as kb would; their stream sequences."""
    nc = await connect_tool(url)
    js = nc.jetstream()
    futures = [await js.publish_async(SUBJECT, broadcast(first_version + i, note)) for i in range(count)]
    seqs = [(await f).seq for f in futures]
    await nc.close()
    return seqs


NO_POSTGRES = pg_bin("initdb") is None or pg_bin("pg_ctl") is None
UNDER_CI = os.environ.get("CI", "").lower() == "true"


def missing_tool(why: str) -> None:
    """A tool `make test` installs is missing: skipped on a developer's machine, a failure under CI=true."""
    if UNDER_CI:
        pytest.fail(f"{why} (CI=true: every tool must be installed)")
    pytest.skip(why)


def need_model() -> None:
    """Skip (or, with CI=true, fail) when `make llm` has not installed the model server and model."""
    lacking = missing()
    if lacking:
        why = f"the local model server is not installed ({'; '.join(lacking)}): make llm"
        if UNDER_CI:
            pytest.fail(why)
        pytest.skip(why)


_databases = iter(range(1, 10_000))


async def fresh_database(server: PostgresServer) -> str:
    """A new empty database on the server: its URL."""
    return await server.database(f"t{next(_databases)}")


def server_log(server: ModelServer) -> str:
    """What the model server printed so far."""
    return Path(server.log_path or "").read_text(errors="replace")


def narrator_env(server: Any, **extra: str) -> dict[str, str]:
    """Gateway settings (as keyword arguments for harness.system.procs) that point the narrator at `server`."""
    return {"narrator_url": server.url, "narrator_model": "smollm2", "narrator_temperature": "0", **extra}
