"""SQLite persistence: world state and the event outbox, written in one transaction."""
from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import orjson

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS worlds (
    experience TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    published_ms INTEGER,
    stream_seq INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_ms IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_ms);
CREATE TABLE IF NOT EXISTS presence (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    experience TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    dropped_at REAL
);
"""


@dataclass(frozen=True)
class OutboxRow:
    """One event waiting to be (or recently) published."""

    id: int
    msg_id: str
    subject: str
    payload: bytes
    stream_seq: int | None = None


class VersionConflict(Exception):
    """Another writer committed this experience first; reload and retry."""


class Store:
    """Owns one SQLite connection on one worker thread, so the event loop never blocks on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        """Open (creating if needed) the database in WAL mode."""
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    async def load_world(self, experience: str) -> dict[str, Any] | None:
        """The last committed world of an experience, or None if it has never been saved."""
        return await self._run(self._load_world, experience)

    def _load_world(self, experience: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT state FROM worlds WHERE experience = ?", (experience,)).fetchone()
        return orjson.loads(row[0]) if row else None

    async def commit(self, experience: str, base_version: int, world: dict[str, Any] | None,
                     events: list[tuple[str, str, bytes]], now_ms: int) -> None:
        """Save the new world (if any) and its events atomically; VersionConflict if base is stale."""
        await self._run(self._commit, experience, base_version, world, events, now_ms)

    def _commit(self, experience: str, base_version: int, world: dict[str, Any] | None,
                events: list[tuple[str, str, bytes]], now_ms: int) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if world is not None:
                self._write_world(experience, base_version, world)
            db.executemany(
                "INSERT OR IGNORE INTO outbox (msg_id, subject, payload, created_ms) VALUES (?, ?, ?, ?)",
                [(msg_id, subject, payload, now_ms) for msg_id, subject, payload in events])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _write_world(self, experience: str, base_version: int, world: dict[str, Any]) -> None:
        state = orjson.dumps(world)
        if base_version == 0 and world["version"] == 0:
            self.db.execute("INSERT OR IGNORE INTO worlds (experience, version, state) VALUES (?, 0, ?)",
                            (experience, state))
            return
        cur = self.db.execute("UPDATE worlds SET version = ?, state = ? WHERE experience = ? AND version = ?",
                              (world["version"], state, experience, base_version))
        if cur.rowcount != 1:
            raise VersionConflict(experience)

    async def unpublished(self, limit: int) -> list[OutboxRow]:
        """The oldest events not yet acknowledged by JetStream, in commit order."""
        return await self._run(self._select, "published_ms IS NULL ORDER BY id LIMIT ?", (limit,))

    async def published_since(self, stream_seq_above: int, since_ms: int) -> list[OutboxRow]:
        """Recently acknowledged events whose stream sequence is above a bound (a lost tail)."""
        return await self._run(
            self._select, "published_ms >= ? AND stream_seq > ? ORDER BY id", (since_ms, stream_seq_above))

    def _select(self, where: str, params: tuple[Any, ...]) -> list[OutboxRow]:
        rows = self.db.execute(f"SELECT id, msg_id, subject, payload, stream_seq FROM outbox WHERE {where}", params)
        return [OutboxRow(*row) for row in rows]

    async def mark_published(self, acks: list[tuple[int, int]], now_ms: int) -> None:
        """Record (row id, stream sequence) acknowledgements."""
        await self._run(self._mark, acks, now_ms)

    def _mark(self, acks: list[tuple[int, int]], now_ms: int) -> None:
        self.db.executemany("UPDATE outbox SET published_ms = ?, stream_seq = ? WHERE id = ?",
                            [(now_ms, seq, row_id) for row_id, seq in acks])

    async def rename(self, row_id: int, msg_id: str) -> None:
        """Give a row a new message id (its old one was taken on the bus by a message not ours)."""
        await self._run(self._rename, row_id, msg_id)

    def _rename(self, row_id: int, msg_id: str) -> None:
        self.db.execute("UPDATE outbox SET msg_id = ? WHERE id = ?", (msg_id, row_id))
        self.db.commit()

    async def mark_unpublished(self, row_ids: list[int]) -> None:
        """Put rows back in the queue (their acknowledged copy was lost by the bus)."""
        await self._run(self._unmark, row_ids)

    def _unmark(self, row_ids: list[int]) -> None:
        self.db.executemany("UPDATE outbox SET published_ms = NULL, stream_seq = NULL WHERE id = ?",
                            [(i,) for i in row_ids])

    async def prune(self, before_ms: int) -> int:
        """Forget events acknowledged before before_ms; returns how many rows went."""
        return await self._run(self._prune, before_ms)

    def _prune(self, before_ms: int) -> int:
        return self.db.execute("DELETE FROM outbox WHERE published_ms IS NOT NULL AND published_ms < ?",
                               (before_ms,)).rowcount

    async def outbox_depth(self) -> int:
        """How many events wait to be published."""
        return await self._run(lambda: self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL").fetchone()[0])

    async def load_presence(self) -> list[tuple[str, str, str, str, float, float | None]]:
        """Every persisted session: (session_id, user_id, experience, gateway_id, seen_at, dropped_at)."""
        return await self._run(lambda: self.db.execute(
            "SELECT session_id, user_id, experience, gateway_id, seen_at, dropped_at FROM presence").fetchall())

    async def save_presence(self, upserts: list[tuple[str, str, str, str, float, float | None]],
                            deletes: list[str]) -> None:
        """Persist presence changes (batched once a second), so a restarted kb still knows who is present."""
        await self._run(self._save_presence, upserts, deletes)

    def _save_presence(self, upserts: list[tuple[str, str, str, str, float, float | None]],
                       deletes: list[str]) -> None:
        if not upserts and not deletes:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?, ?)", upserts)
            db.executemany("DELETE FROM presence WHERE session_id = ?", [(sid,) for sid in deletes])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
