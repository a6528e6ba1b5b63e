"""What every kb store keeps, by entity: the world's meta row, one row per area, one per player; the
outbox; presence."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb.world.model import TOUCHED

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
OutboxEvent = tuple[str, str, bytes]
PresenceRow = tuple[str, str, str, str, float, "float | None"]
# Top-level parts of a world kept apart from the meta row (areas and players have rows of their own).
ENTITY_PARTS = ("areas", "players", TOUCHED)


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


@dataclass
class WorldDelta:
    """What one commit changed: the new version and meta, and only the areas and players that changed (None: gone)."""

    version: int
    meta: dict[str, Any]
    areas: dict[str, Any] = field(default_factory=dict)
    players: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def whole(cls, world: dict[str, Any]) -> "WorldDelta":
        """Every part of a world (its first save)."""
        return cls(world["version"], meta_of(world), dict(world["areas"]), dict(world["players"]))

    @classmethod
    def between(cls, base: dict[str, Any], new: dict[str, Any]) -> "WorldDelta":
        """The parts of `new` that are not the very objects of `base` (rules copy what they change)."""
        areas = {} if new["areas"] is base["areas"] else {
            a: s for a, s in new["areas"].items() if base["areas"].get(a) is not s}
        if new["areas"] is not base["areas"]:  # an area the content no longer has (a migration): its row goes
            areas.update({a: None for a in base["areas"] if a not in new["areas"]})
        touched = new.get(TOUCHED)
        if new["players"] is base["players"]:
            players = {}
        elif touched is not None:  # the rules copied these players only: no scan of everyone ever
            players = {u: new["players"][u] for u in touched if u in new["players"]}
        else:
            players = {u: p for u, p in new["players"].items() if base["players"].get(u) is not p}
        return cls(new["version"], meta_of(new), areas, players)


def meta_of(world: dict[str, Any]) -> dict[str, Any]:
    """The world without its areas and players."""
    return {k: v for k, v in world.items() if k not in ENTITY_PARTS}


def assemble(meta: dict[str, Any], areas: dict[str, Any], players: dict[str, Any]) -> dict[str, Any]:
    """A world from its rows."""
    return {**meta, "areas": areas, "players": players}


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration file of a dialect, in order (`0001_name.sql`)."""
    found = []
    for path in sorted((MIGRATIONS / dialect).glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path.read_text()))
    return found


class Store(abc.ABC):
    """The contract kb's services use, implemented for SQLite and PostgreSQL (tests run it on both)."""

    url: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect."""

    @abc.abstractmethod
    async def load_world(self, experience: str, players_seen_since_ms: int = 0) -> dict[str, Any] | None:
        """The last committed world, with only the players seen since the bound (None: never saved)."""

    @abc.abstractmethod
    async def cold_players(self, experience: str, seen_before_ms: int) -> list[str]:
        """Ids of the players saved but not seen since the bound (the ones load_world left out)."""

    @abc.abstractmethod
    async def load_player(self, experience: str, user_id: str) -> dict[str, Any] | None:
        """One player's saved state (one who left the hot state), or None."""

    @abc.abstractmethod
    async def commit(self, experience: str, base_version: int, delta: WorldDelta | None,
                     events: list[OutboxEvent], now_ms: int) -> None:
        """Write the changed rows and the events atomically; VersionConflict if `base_version` is stale."""

    @abc.abstractmethod
    async def unpublished(self, limit: int, subjects: Sequence[str] | None = None) -> list[OutboxRow]:
        """The oldest events not yet acknowledged by JetStream, in commit order (only on `subjects`, if given)."""

    @abc.abstractmethod
    async def published_since(self, stream_seq_above: int, since_ms: int) -> list[OutboxRow]:
        """Recently acknowledged events whose stream sequence is above a bound (a lost tail)."""

    @abc.abstractmethod
    async def mark_published(self, acks: list[tuple[int, int]], now_ms: int) -> None:
        """Record (row id, stream sequence) acknowledgements."""

    @abc.abstractmethod
    async def rename(self, row_id: int, msg_id: str) -> None:
        """Give a row a new message id (its old one was taken on the bus by a message not ours)."""

    @abc.abstractmethod
    async def mark_unpublished(self, row_ids: list[int]) -> None:
        """Put rows back in the queue (their acknowledged copy was lost by the bus)."""

    @abc.abstractmethod
    async def prune(self, before_ms: int) -> int:
        """Forget events acknowledged before `before_ms`; how many went."""

    @abc.abstractmethod
    async def outbox_depth(self) -> int:
        """How many events wait to be published."""

    @abc.abstractmethod
    async def load_presence(self) -> list[PresenceRow]:
        """Every persisted session: (session_id, user_id, experience, gateway_id, seen_at, dropped_at)."""

    @abc.abstractmethod
    async def save_presence(self, upserts: list[PresenceRow], deletes: list[str]) -> None:
        """Persist presence changes (batched), so a restarted kb still knows who is present."""
