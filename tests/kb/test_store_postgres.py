"""The store contract, run on SQLite and on a real PostgreSQL server; several kb on one PostgreSQL."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from kb.stores import Store, VersionConflict, WorldDelta, open_store
from kb.stores.base import meta_of
from kb.stores.sqlite import SqliteStore
from tests.helpers import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: Any, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(str(tmp_path / "kb.sqlite3"))
    else:
        opened = open_store(await fresh_database(request.getfixturevalue("postgres")))
    await opened.open()
    yield opened
    await opened.close()


def world(version: int, players: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"experience": "w", "version": version, "zone": {"id": "z"}, "npcs": {}, "environment": {},
            "respawns": [], "clock": {"tick": 0}, "areas": {"a": {"id": "a", "spots": {}}, "b": {"id": "b", "spots": {}}},
            "players": players or {}}


async def test_store_contract_first_save_commit_by_entity_and_load(store: Store) -> None:
    base = world(0)
    await store.commit("w", 0, WorldDelta.whole(base), [], 1_000)
    assert await store.load_world("w") == base
    new = {**base, "version": 1, "players": {"bob": {"current_area": "a", "inventory": []}},
           "areas": {**base["areas"], "a": {"id": "a", "spots": {"s": {"items": [1]}}}}}
    delta = WorldDelta.between(base, new)
    assert set(delta.areas) == {"a"} and set(delta.players) == {"bob"}, "only what changed is written"
    await store.commit("w", 0, delta, [("m1", "world.updates.exp.w", b"e1")], 2_000)
    assert await store.load_world("w") == new
    assert [(r.msg_id, r.payload) for r in await store.unpublished(10)] == [("m1", b"e1")]


async def test_store_contract_the_version_fence_rejects_a_stale_writer_and_keeps_its_events_out(store: Store) -> None:
    await store.commit("w", 0, WorldDelta.whole(world(0)), [], 1)
    await store.commit("w", 0, WorldDelta(1, {"experience": "w", "version": 1}), [("a", "s", b"1")], 2)
    with pytest.raises(VersionConflict):
        await store.commit("w", 0, WorldDelta(1, {"experience": "w", "version": 1}), [("b", "s", b"2")], 3)
    assert [r.msg_id for r in await store.unpublished(10)] == ["a"], "the loser's events never existed"


async def test_store_contract_cold_players_stay_out_of_the_hot_state_and_load_on_demand(store: Store) -> None:
    await store.commit("w", 0, WorldDelta.whole(world(0)), [], 1)
    await store.commit("w", 0, WorldDelta(1, {"experience": "w", "version": 1}, players={"old": {"x": 1}}), [], 1_000)
    await store.commit("w", 1, WorldDelta(2, {"experience": "w", "version": 2}, players={"new": {"x": 2}}), [], 9_000)
    hot = await store.load_world("w", players_seen_since_ms=5_000)
    assert hot is not None and set(hot["players"]) == {"new"} and hot["version"] == 2
    assert await store.load_player("w", "old") == {"x": 1} and await store.load_player("w", "nobody") is None
    assert await store.cold_players("w", 5_000) == ["old"]


async def test_store_contract_outbox_in_commit_order_published_pruned_and_presence(store: Store) -> None:
    await store.commit("w", 0, None, [(f"m{i}", "s", b"%d" % i) for i in range(5)], 10)
    rows = await store.unpublished(10)
    assert [r.msg_id for r in rows] == [f"m{i}" for i in range(5)] and await store.outbox_depth() == 5
    await store.mark_published([(rows[0].id, 101), (rows[1].id, 102)], 20)
    assert [r.stream_seq for r in await store.published_since(101, 0)] == [102]
    await store.mark_unpublished([rows[1].id])
    await store.rename(rows[2].id, "m2-renamed")
    assert [r.msg_id for r in await store.unpublished(2)] == ["m1", "m2-renamed"]
    assert await store.prune(30) == 1 and await store.outbox_depth() == 4
    await store.save_presence([("s1", "bob", "w", "g", 1.5, None), ("s2", "amy", "w", "g", 2.0, 3.0)], [])
    await store.save_presence([("s1", "bob", "w", "g2", 4.0, None)], ["s2"])
    assert await store.load_presence() == [("s1", "bob", "w", "g2", 4.0, None)]


async def test_postgres_migrations_are_versioned_and_run_once_by_many_starting_together(postgres) -> None:
    url = await fresh_database(postgres)
    stores = [open_store(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # one at a time under the advisory lock
    applied = await stores[0].pool.fetch("SELECT version, name FROM schema_migrations")  # type: ignore[attr-defined]
    assert [(r["version"], r["name"]) for r in applied] == [(1, "entities")]
    for s in stores:
        await s.close()


async def test_sqlite_world_saved_whole_before_the_migration_is_split_into_rows(tmp_path: Path) -> None:
    import sqlite3

    import orjson
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript((Path(__file__).resolve().parents[2] / "kb/migrations/sqlite/0001_initial.sql").read_text())
    old.execute("INSERT INTO worlds VALUES ('w', 7, ?)", (orjson.dumps(world(7, {"bob": {"x": 1}})),))
    old.commit()
    old.close()
    store = SqliteStore(str(path))
    await store.open()
    assert await store.load_world("w") == world(7, {"bob": {"x": 1}})
    await store.commit("w", 7, WorldDelta(8, meta_of(world(8))), [], 1)
    loaded = await store.load_world("w")
    assert loaded is not None and loaded["version"] == 8 and loaded["players"] == {"bob": {"x": 1}}
    await store.close()
