"""The embedded store: one SQLite file (WAL, fsync on commit), driven on one worker thread."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import orjson

from kb.stores.base import OutboxEvent, OutboxRow, PresenceRow, Store, VersionConflict, WorldDelta, assemble, migrations

T = TypeVar("T")


class SqliteStore(Store):
    """Owns one SQLite connection on one worker thread, so the event loop never blocks on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        self._db = db
        self._migrate()

    def _migrate(self) -> None:
        """Apply every migration file not yet recorded, each in its own transaction."""
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                   " applied_ms INTEGER NOT NULL)")
        for version, name, sql in migrations("sqlite"):
            with self._transaction():
                if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, int(time.time() * 1000)))

    def _transaction(self) -> "_Tx":
        return _Tx(self.db)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    async def load_world(self, experience: str, players_seen_since_ms: int = 0) -> dict[str, Any] | None:
        return await self._run(self._load_world, experience, players_seen_since_ms)

    def _load_world(self, experience: str, since_ms: int) -> dict[str, Any] | None:
        db = self.db
        row = db.execute("SELECT meta FROM world_meta WHERE experience = ?", (experience,)).fetchone()
        if row is None:
            return self._split_legacy(experience)
        areas = {a: orjson.loads(s) for a, s in db.execute(
            "SELECT area_id, state FROM areas WHERE experience = ?", (experience,))}
        players = {u: orjson.loads(s) for u, s in db.execute(
            "SELECT user_id, state FROM players WHERE experience = ? AND seen_ms >= ?", (experience, since_ms))}
        return assemble(orjson.loads(row[0]), areas, players)

    def _split_legacy(self, experience: str) -> dict[str, Any] | None:
        """A world saved whole before migration 0002: store it by entity once, then load as usual."""
        row = self.db.execute("SELECT state FROM worlds WHERE experience = ?", (experience,)).fetchone()
        if row is None:
            return None
        world = orjson.loads(row[0])
        with self._transaction():
            self._write(experience, None, WorldDelta.whole(world), int(time.time() * 1000))
            self.db.execute("DELETE FROM worlds WHERE experience = ?", (experience,))
        return world

    async def cold_players(self, experience: str, seen_before_ms: int) -> list[str]:
        return await self._run(lambda: [row[0] for row in self.db.execute(
            "SELECT user_id FROM players WHERE experience = ? AND seen_ms < ?", (experience, seen_before_ms))])

    async def load_player(self, experience: str, user_id: str) -> dict[str, Any] | None:
        row = await self._run(lambda: self.db.execute(
            "SELECT state FROM players WHERE experience = ? AND user_id = ?", (experience, user_id)).fetchone())
        return orjson.loads(row[0]) if row else None

    async def commit(self, experience: str, base_version: int, delta: WorldDelta | None,
                     events: list[OutboxEvent], now_ms: int) -> None:
        await self._run(self._commit, experience, base_version, delta, events, now_ms)

    def _commit(self, experience: str, base_version: int, delta: WorldDelta | None,
                events: list[OutboxEvent], now_ms: int) -> None:
        with self._transaction():
            if delta is not None:
                self._write(experience, base_version, delta, now_ms)
            self.db.executemany(
                "INSERT OR IGNORE INTO outbox (msg_id, subject, payload, created_ms) VALUES (?, ?, ?, ?)",
                [(msg_id, subject, payload, now_ms) for msg_id, subject, payload in events])

    def _write(self, experience: str, base_version: int | None, delta: WorldDelta, now_ms: int) -> None:
        """The meta row behind the version fence (None: a first save), then the changed rows."""
        db = self.db
        meta = orjson.dumps(delta.meta)
        if base_version is None or (base_version == 0 and delta.version == 0):
            cur = db.execute("INSERT OR IGNORE INTO world_meta (experience, version, meta) VALUES (?, ?, ?)",
                             (experience, delta.version, meta))
            if cur.rowcount != 1:
                return  # another process saved version 0 first: theirs stands
        else:
            cur = db.execute("UPDATE world_meta SET version = ?, meta = ? WHERE experience = ? AND version = ?",
                             (delta.version, meta, experience, base_version))
            if cur.rowcount != 1:
                raise VersionConflict(experience)
        db.executemany("INSERT OR REPLACE INTO areas (experience, area_id, state) VALUES (?, ?, ?)",
                       [(experience, a, orjson.dumps(s)) for a, s in delta.areas.items() if s is not None])
        db.executemany("DELETE FROM areas WHERE experience = ? AND area_id = ?",
                       [(experience, a) for a, s in delta.areas.items() if s is None])
        db.executemany("INSERT OR REPLACE INTO players (experience, user_id, state, seen_ms) VALUES (?, ?, ?, ?)",
                       [(experience, u, orjson.dumps(p), now_ms) for u, p in delta.players.items()])

    async def unpublished(self, limit: int, subjects: Sequence[str] | None = None) -> list[OutboxRow]:
        if subjects is None:
            return await self._run(self._select, "published_ms IS NULL ORDER BY id LIMIT ?", (limit,))
        marks = ", ".join("?" * len(subjects))
        return await self._run(self._select, f"published_ms IS NULL AND subject IN ({marks}) ORDER BY id LIMIT ?",
                               (*subjects, limit))

    async def published_since(self, stream_seq_above: int, since_ms: int) -> list[OutboxRow]:
        return await self._run(
            self._select, "published_ms >= ? AND stream_seq > ? ORDER BY id", (since_ms, stream_seq_above))

    def _select(self, where: str, params: tuple[Any, ...]) -> list[OutboxRow]:
        rows = self.db.execute(f"SELECT id, msg_id, subject, payload, stream_seq FROM outbox WHERE {where}", params)
        return [OutboxRow(*row) for row in rows]

    async def mark_published(self, acks: list[tuple[int, int]], now_ms: int) -> None:
        await self._run(lambda: self.db.executemany(
            "UPDATE outbox SET published_ms = ?, stream_seq = ? WHERE id = ?",
            [(now_ms, seq, row_id) for row_id, seq in acks]))

    async def rename(self, row_id: int, msg_id: str) -> None:
        await self._run(lambda: self.db.execute("UPDATE outbox SET msg_id = ? WHERE id = ?", (msg_id, row_id)))

    async def mark_unpublished(self, row_ids: list[int]) -> None:
        await self._run(lambda: self.db.executemany(
            "UPDATE outbox SET published_ms = NULL, stream_seq = NULL WHERE id = ?", [(i,) for i in row_ids]))

    async def prune(self, before_ms: int) -> int:
        return await self._run(lambda: self.db.execute(
            "DELETE FROM outbox WHERE published_ms IS NOT NULL AND published_ms < ?", (before_ms,)).rowcount)

    async def outbox_depth(self) -> int:
        return await self._run(lambda: self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL").fetchone()[0])

    async def load_presence(self) -> list[PresenceRow]:
        return await self._run(lambda: self.db.execute(
            "SELECT session_id, user_id, experience, gateway_id, seen_at, dropped_at FROM presence").fetchall())

    async def save_presence(self, upserts: list[PresenceRow], deletes: list[str]) -> None:
        if upserts or deletes:
            await self._run(self._save_presence, upserts, deletes)

    def _save_presence(self, upserts: list[PresenceRow], deletes: list[str]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?, ?)", upserts)
            self.db.executemany("DELETE FROM presence WHERE session_id = ?", [(sid,) for sid in deletes])


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (cancellation included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
