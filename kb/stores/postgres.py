"""kb on a PostgreSQL server (asyncpg): the same rows and transactional outbox as SQLite, shared by
several kb processes."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from kb.stores.base import OutboxEvent, OutboxRow, PresenceRow, Store, VersionConflict, WorldDelta, assemble, migrations

MIGRATION_LOCK = 0x6A1A_4B5B  # an advisory lock: kb processes starting together migrate one at a time
POOL_SIZE = 8


class PostgresStore(Store):
    """A connection pool; every commit is one transaction (state rows and outbox rows together)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=POOL_SIZE, command_timeout=30)
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                             " name TEXT NOT NULL, applied_ms BIGINT NOT NULL)")
            applied = {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations("postgres"):
                if version not in applied:
                    await db.execute(sql)
                    await db.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)", version, name,
                                     int(time.time() * 1000))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def load_world(self, experience: str, players_seen_since_ms: int = 0) -> dict[str, Any] | None:
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read", readonly=True):
            meta = await db.fetchval("SELECT meta FROM world_meta WHERE experience = $1", experience)
            if meta is None:
                return None
            areas = {r["area_id"]: orjson.loads(r["state"]) for r in await db.fetch(
                "SELECT area_id, state FROM areas WHERE experience = $1", experience)}
            players = {r["user_id"]: orjson.loads(r["state"]) for r in await db.fetch(
                "SELECT user_id, state FROM players WHERE experience = $1 AND seen_ms >= $2", experience,
                players_seen_since_ms)}
        return assemble(orjson.loads(meta), areas, players)

    async def cold_players(self, experience: str, seen_before_ms: int) -> list[str]:
        rows = await self.pool.fetch("SELECT user_id FROM players WHERE experience = $1 AND seen_ms < $2",
                                     experience, seen_before_ms)
        return [r["user_id"] for r in rows]

    async def load_player(self, experience: str, user_id: str) -> dict[str, Any] | None:
        state = await self.pool.fetchval("SELECT state FROM players WHERE experience = $1 AND user_id = $2",
                                         experience, user_id)
        return orjson.loads(state) if state is not None else None

    async def commit(self, experience: str, base_version: int, delta: WorldDelta | None,
                     events: list[OutboxEvent], now_ms: int) -> None:
        async with self.pool.acquire() as db, db.transaction():
            if delta is not None:
                await self._write(db, experience, base_version, delta, now_ms)
            if events:
                await db.executemany(
                    "INSERT INTO outbox (msg_id, subject, payload, created_ms) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (msg_id) DO NOTHING",
                    [(msg_id, subject, payload, now_ms) for msg_id, subject, payload in events])

    async def _write(self, db: asyncpg.Connection, experience: str, base_version: int, delta: WorldDelta,
                     now_ms: int) -> None:
        """The meta row behind the version fence (version 0: a first save, first one wins), then changed rows."""
        meta = orjson.dumps(delta.meta)
        if base_version == 0 and delta.version == 0:
            inserted = await db.execute("INSERT INTO world_meta VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
                                        experience, meta)
            if inserted.endswith(" 0"):
                return
        else:
            updated = await db.execute("UPDATE world_meta SET version = $1, meta = $2 WHERE experience = $3"
                                       " AND version = $4", delta.version, meta, experience, base_version)
            if updated != "UPDATE 1":
                raise VersionConflict(experience)
        if kept := [(experience, a, orjson.dumps(s)) for a, s in delta.areas.items() if s is not None]:
            await db.executemany(
                "INSERT INTO areas VALUES ($1, $2, $3) ON CONFLICT (experience, area_id) DO UPDATE SET state = $3",
                kept)
        if gone := [a for a, s in delta.areas.items() if s is None]:
            await db.execute("DELETE FROM areas WHERE experience = $1 AND area_id = ANY($2)", experience, gone)
        if delta.players:
            await db.executemany(
                "INSERT INTO players VALUES ($1, $2, $3, $4) ON CONFLICT (experience, user_id)"
                " DO UPDATE SET state = $3, seen_ms = $4",
                [(experience, u, orjson.dumps(p), now_ms) for u, p in delta.players.items()])

    async def unpublished(self, limit: int, subjects: Sequence[str] | None = None) -> list[OutboxRow]:
        if subjects is None:
            return await self._select("published_ms IS NULL ORDER BY id LIMIT $1", limit)
        return await self._select("published_ms IS NULL AND subject = ANY($2) ORDER BY id LIMIT $1", limit,
                                  list(subjects))

    async def published_since(self, stream_seq_above: int, since_ms: int) -> list[OutboxRow]:
        return await self._select("published_ms >= $1 AND stream_seq > $2 ORDER BY id", since_ms, stream_seq_above)

    async def _select(self, where: str, *params: Any) -> list[OutboxRow]:
        rows = await self.pool.fetch(f"SELECT id, msg_id, subject, payload, stream_seq FROM outbox WHERE {where}",
                                     *params)
        return [OutboxRow(r["id"], r["msg_id"], r["subject"], bytes(r["payload"]), r["stream_seq"]) for r in rows]

    async def mark_published(self, acks: list[tuple[int, int]], now_ms: int) -> None:
        await self.pool.executemany("UPDATE outbox SET published_ms = $1, stream_seq = $2 WHERE id = $3",
                                    [(now_ms, seq, row_id) for row_id, seq in acks])

    async def rename(self, row_id: int, msg_id: str) -> None:
        await self.pool.execute("UPDATE outbox SET msg_id = $1 WHERE id = $2", msg_id, row_id)

    async def mark_unpublished(self, row_ids: list[int]) -> None:
        await self.pool.execute("UPDATE outbox SET published_ms = NULL, stream_seq = NULL WHERE id = ANY($1)", row_ids)

    async def prune(self, before_ms: int) -> int:
        done = await self.pool.execute("DELETE FROM outbox WHERE published_ms IS NOT NULL AND published_ms < $1",
                                       before_ms)
        return int(done.split()[-1])

    async def outbox_depth(self) -> int:
        return int(await self.pool.fetchval("SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL"))

    async def load_presence(self) -> list[PresenceRow]:
        rows = await self.pool.fetch(
            "SELECT session_id, user_id, experience, gateway_id, seen_at, dropped_at FROM presence")
        return [tuple(r) for r in rows]

    async def save_presence(self, upserts: list[PresenceRow], deletes: list[str]) -> None:
        if not upserts and not deletes:
            return
        async with self.pool.acquire() as db, db.transaction():
            await db.executemany(
                "INSERT INTO presence VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id) DO UPDATE SET"
                " user_id = $2, experience = $3, gateway_id = $4, seen_at = $5, dropped_at = $6", upserts)
            if deletes:
                await db.execute("DELETE FROM presence WHERE session_id = ANY($1)", deletes)
