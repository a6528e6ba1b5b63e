"""The strict checks of a cluster chaos run: kb's acknowledged outbox against the stream, actions, chains."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from harness.chaos.players import LedgerPlayer
from harness.checks.loss import Stream, StreamMessage, check_chain
from harness.checks.verify import EXPERIENCE, read_subject
from shared.config import Settings
from shared.subjects import experience_updates


@dataclass
class StreamEntry:
    """One message of the experience's subject as the checks need it."""

    seq: int
    kind: str
    version: int | None
    base: int | None
    actor: str | None
    about: str | None
    payload: bytes


@dataclass
class LedgerFindings:
    """What the ledger checks found: each list names the offending items (empty when all is well)."""

    acknowledged: int = 0
    missing_acked: list[str] = field(default_factory=list)  # kb says acknowledged at seq; not there
    unpublished: int = 0  # outbox rows never acknowledged after the settle
    duplicated: list[int] = field(default_factory=list)  # stream seqs carrying a payload seen before
    version_breaks: list[str] = field(default_factory=list)  # versions not stepping by one in stream order
    kb_version: int = 0  # committed in PostgreSQL (read first)
    stream_version: int = 0  # the stream's last world_update (read after; the clock may have ticked since)
    commits_checked: int = 0  # actions answered as committed, each looked up in the stream
    committed_twice: list[str] = field(default_factory=list)
    half_committed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_acked or self.unpublished or self.duplicated or self.version_breaks
                    or self.committed_twice or self.half_committed or self.stream_version < self.kb_version)


async def read_stream(nats_url: str) -> list[StreamEntry]:
    """Every message on the experience's subject, in stream order."""
    entries: list[StreamEntry] = []

    def keep(seq: int, data: bytes, *_: float) -> None:  # (verify.read_subject may add the stored time)
        event = orjson.loads(data)
        entries.append(StreamEntry(seq, event.get("type", "?"), event.get("snapshot_version"),
                                   event.get("base_version"), event.get("actor_id"), event.get("user_id"), data))
    await read_subject(nats_url, Settings.from_env().stream_name, experience_updates(EXPERIENCE), keep)
    return entries


async def committed(dsn: str) -> tuple[list[Any], int]:
    """kb's outbox rows of the experience and the world's committed version, read in one transaction
    (rows are kept for GAIA_KB_OUTBOX_KEEP_S after their ack)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            rows = await conn.fetch("SELECT msg_id, payload, stream_seq FROM outbox WHERE subject = $1 ORDER BY id",
                                    experience_updates(EXPERIENCE))
            version = await conn.fetchval("SELECT version FROM world_meta WHERE experience = $1", EXPERIENCE)
        return list(rows), int(version or 0)
    finally:
        await conn.close()


def check_ledger(entries: list[StreamEntry], rows: list[Any], kb_version: int,
                 players: list[LedgerPlayer]) -> LedgerFindings:
    """Every acknowledged event in the stream once, in order; every action committed at most once and whole.

    `rows` and `kb_version` are read before `entries`: a row not yet acknowledged then (the clock ticks on)
    must be in the stream by the time it is read; the stream must reach the committed version.
    """
    found = LedgerFindings(kb_version=kb_version)
    by_seq = {e.seq: e for e in entries}
    payloads = {e.payload for e in entries}
    for row in rows:
        if row["stream_seq"] is None:
            found.unpublished += bytes(row["payload"]) not in payloads
            continue
        found.acknowledged += 1
        entry = by_seq.get(row["stream_seq"])
        if entry is None or entry.payload != bytes(row["payload"]):
            found.missing_acked.append(f"{row['msg_id']}@{row['stream_seq']}")
    seen: set[bytes] = set()
    for entry in entries:
        if entry.payload in seen:
            found.duplicated.append(entry.seq)
        seen.add(entry.payload)
    updates = [e for e in entries if e.kind == "world_update"]
    previous = updates[0].version - 1 if updates and updates[0].version else 0
    for entry in updates:
        if entry.version != previous + 1 or entry.base != previous:
            found.version_breaks.append(f"seq {entry.seq}: v{entry.base}->v{entry.version} after v{previous}")
        previous = entry.version or previous
    found.stream_version = previous
    actor_of = {e.version: e.actor for e in updates}
    for player in players:
        user = player.user_id
        mine = sum(1 for e in updates if e.actor == user)
        if mine > player.sent:
            found.committed_twice.append(f"{user}: {mine} commits from {player.sent} actions sent")
        for answer in player.answers:
            found.commits_checked += answer.version is not None
            if answer.success and answer.version is not None and actor_of.get(answer.version) != user:
                found.half_committed.append(f"{user} {answer.action} answered v{answer.version}, "
                                            f"stream has {actor_of.get(answer.version, 'nothing')}")
    return found


@dataclass(frozen=True)
class Chain:
    """One session chain as received: a WebSocket player's or an SSE watcher's frames and sequences."""

    user: str
    frames: list[dict[str, Any]]
    seqs: list[int]


@dataclass
class ChainFindings:
    """Every chain (WebSocket and SSE) against the stream; lost names each missing sequence."""

    expected: int = 0
    delivered: int = 0
    replaced: int = 0
    lost: list[int] = field(default_factory=list)
    duplicated: int = 0
    out_of_order: int = 0
    needless: list[str] = field(default_factory=list)  # resyncs the stream shows were not due


def check_chains(entries: list[StreamEntry], chains: list[Chain], threshold: int) -> ChainFindings:
    """Every event due to each chain since its first snapshot arrived once, in order, or was forgiven by the
    snapshot after a due resync (harness/checks/loss.py's rule; `threshold`: GAIA_RESYNC_AFTER_EVENTS)."""
    stream = Stream([StreamMessage(e.seq, e.kind, e.version, e.about) for e in entries])
    found = ChainFindings()
    for chain in chains:
        result = check_chain(stream, chain.frames, chain.user, threshold)
        due, replaced = result.due, result.forgiven
        found.needless += [f"{chain.user}: {r.reason}; {r.why}" for r in result.needless]
        got = chain.seqs
        found.expected += len(due)
        found.replaced += len(replaced)
        found.delivered += len(due & set(got))
        found.lost += sorted(due - set(got))
        found.duplicated += len(got) - len(set(got))
        found.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b <= a)
    return found


def resync_reasons(frames: list[dict[str, Any]]) -> dict[str, int]:
    """How many resync_required frames a chain got, by the reason they state ('unstated' if none)."""
    reasons: dict[str, int] = {}
    for frame in frames:
        if frame.get("type") == "resync_required":
            reason = str(frame.get("reason") or "unstated")
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons
