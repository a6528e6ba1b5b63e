"""Lease mode: each world's outbox rows are published by the kb that owns the world, never by two at once.

Two kb on one store both publishing every row raced: the loser of each race got JetStream's
"duplicate message id is in process" (409), which nats-py does not hand to the waiting future, so
that publisher stalled 5 s (seen in gaia-harness chaos --cluster's kb logs).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import orjson
import pytest

from kb.outbox import OutboxPublisher
from kb.stores import Store, open_store
from shared.subjects import experience_updates
from tests.helpers import fresh_database, published_all


async def test_two_publishers_on_one_store_each_publish_only_the_worlds_they_own(outbox_parts) -> None:
    settings, store, link = outbox_parts
    owner_a, owner_b = OutboxPublisher(store, link, settings), OutboxPublisher(store, link, settings)
    owner_a.subjects = lambda: [experience_updates("world-a")]
    owner_b.subjects = lambda: [experience_updates("world-b")]
    for i in range(20):
        experience = "world-a" if i % 3 else "world-b"
        payload = orjson.dumps({"type": "presence", "event": "join", "user_id": f"u{i}", "experience": experience})
        await store.commit(experience, 0, None, [(f"{experience}:{i}", experience_updates(experience), payload)], 0)
    tasks = [asyncio.create_task(p.run()) for p in (owner_a, owner_b)]
    for publisher in (owner_a, owner_b):
        publisher.notify()
    await published_all(store)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (owner_a.published, owner_b.published) == (13, 7), "each published its own world's rows, once"
    info = await link.js.stream_info(settings.stream_name)
    assert info.state.messages == 20


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store kind, opened on a fresh database."""
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'kb.sqlite3'}")
    else:
        opened = open_store(await fresh_database(request.getfixturevalue("postgres")))
    await opened.open()
    yield opened
    await opened.close()


async def test_the_store_hands_out_unpublished_rows_of_the_subjects_asked_for(store: Store) -> None:
    for i, experience in enumerate(("world-a", "world-b", "world-a")):
        payload = orjson.dumps({"type": "presence", "event": "join", "user_id": f"u{i}", "experience": experience})
        await store.commit(experience, 0, None, [(f"m{i}", experience_updates(experience), payload)], 0)
    assert await store.unpublished(10, []) == []
    assert [r.msg_id for r in await store.unpublished(10, [experience_updates("world-a")])] == ["m0", "m2"]
    assert [r.msg_id for r in await store.unpublished(1, [experience_updates("world-b")])] == ["m1"]
    assert [r.msg_id for r in await store.unpublished(10)] == ["m0", "m1", "m2"]
