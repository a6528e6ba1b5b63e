"""kb's persistence: one Store contract, SQLite (embedded) and PostgreSQL (a server several kb share)."""
from __future__ import annotations

from kb.stores.base import OutboxRow, Store, VersionConflict, WorldDelta


def open_store(url: str) -> Store:
    """The store a URL names: `sqlite:///path/to/kb.sqlite3` or `postgresql://user:password@host:port/db`."""
    if url.startswith("sqlite:///"):
        from kb.stores.sqlite import SqliteStore
        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from kb.stores.postgres import PostgresStore
        return PostgresStore(url)
    raise ValueError("GAIA_KB_STORE must start with sqlite:/// or postgresql:// (got a URL of another kind)")


__all__ = ["OutboxRow", "Store", "VersionConflict", "WorldDelta", "open_store"]
