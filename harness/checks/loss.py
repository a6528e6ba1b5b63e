"""The loss check's rule, one chain at a time: what was due, what a due resync forgave, whether each resync was due.

A chain is one player's sessions in arrival order: a first snapshot, then events, resumes
(`resumed`) and resyncs (`resync_required` followed by a snapshot). An event is forgiven only by
the snapshot that follows a `resync_required`; any other snapshot (a `get_state` answer, say)
forgives nothing. A resync is due only when the client's cursor was more than the gateway's
`resync_after_events` behind (counted as the subject's messages between the cursor and the first
event past the snapshot that followed), or the stream no longer held the cursor (older than its
first message, or ahead of its last).
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LEAVE_MARGIN_S = 1.0  # a chain with no event owes only events stored this long before it left


@dataclass(frozen=True)
class StreamMessage:
    """One message of an experience subject, as far as delivery checks care."""

    seq: int
    kind: str
    version: int | None  # snapshot_version of a world_update
    about: str | None  # the user a presence event is about
    stored_at: float = 0.0  # the stream's timestamp (seconds since the epoch)


@dataclass(frozen=True)
class Resync:
    """One `resync_required` and the snapshot after it, with the evidence that it was due (or not)."""

    cursor: int
    reason: str
    snapshot_version: int
    behind: int  # subject messages after the cursor that the snapshot replaced
    due: bool
    why: str


@dataclass
class ChainCheck:
    """What one chain owed, what a due resync forgave, and every resume's outcome."""

    due: set[int] = field(default_factory=set)
    forgiven: set[int] = field(default_factory=set)
    resyncs: list[Resync] = field(default_factory=list)
    replays: int = 0  # resumes that ended with `resumed` (served from the stream)
    snapshots: int = 0  # area_of_interest frames received, the first included

    @property
    def needless(self) -> list[Resync]:
        return [r for r in self.resyncs if not r.due]


class Stream:
    """A subject's messages indexed once for many chains: by sequence, and world_updates by version."""

    def __init__(self, messages: list[StreamMessage]) -> None:
        self.messages = messages
        self.seqs = [m.seq for m in messages]
        updates = [m for m in messages if m.kind == "world_update"]
        self.update_versions = [m.version or 0 for m in updates]
        self.update_seqs = [m.seq for m in updates]
        self.first = self.seqs[0] if self.seqs else 1
        self.last = self.seqs[-1] if self.seqs else 0

    def first_past(self, version: int) -> float:
        """Sequence of the first world_update past `version` (infinity if none)."""
        i = bisect.bisect_right(self.update_versions, version)
        return self.update_seqs[i] if i < len(self.update_seqs) else float("inf")

    def between(self, after: int, before: float) -> int:
        """Messages with after < seq < before."""
        end = len(self.seqs) if before == float("inf") else bisect.bisect_left(self.seqs, before)
        return max(0, end - bisect.bisect_right(self.seqs, after))

    def from_seq(self, seq: float) -> list[StreamMessage]:
        """Messages at or after `seq`."""
        return [] if seq == float("inf") else self.messages[bisect.bisect_left(self.seqs, seq):]


def first_past(messages: list[StreamMessage], version: int) -> float:
    """Sequence of the first world_update past `version` (infinity if none)."""
    return Stream(messages).first_past(version)


def judge_resync(stream: Stream, cursor: int, version: int, reason: str, threshold: int) -> Resync:
    """Was this resync due? Behind by more than `threshold`, or a cursor the stream did not hold."""
    behind = stream.between(cursor, stream.first_past(version))
    if behind > threshold:
        return Resync(cursor, reason, version, behind, True, f"{behind} behind > {threshold}")
    if cursor < stream.first - 1:
        return Resync(cursor, reason, version, behind, True,
                      f"cursor {cursor} older than the stream's first {stream.first}")
    if cursor > stream.last:
        return Resync(cursor, reason, version, behind, True,
                      f"cursor {cursor} ahead of the stream's last {stream.last}")
    return Resync(cursor, reason, version, behind, False, f"only {behind} behind (<= {threshold}), cursor held")


def check_chain(messages: list[StreamMessage] | Stream, frames: list[dict[str, Any]], user: str, threshold: int,
                left_at: float | None = None) -> ChainCheck:
    """Apply the rule to one chain; `left_at` (wall time) bounds what a chain that got no event owed."""
    out = ChainCheck()
    stream = messages if isinstance(messages, Stream) else Stream(messages)
    windows: list[tuple[int, int, float]] = []  # (cursor, version, first of mine past it)
    first_view: int | None = None
    cursor: int | None = None
    pending: tuple[int | None, str] | None = None
    for frame in frames:
        kind = frame.get("type")
        if "seq" in frame:
            cursor = frame["seq"] if cursor is None else max(cursor, frame["seq"])
        elif kind == "resumed":
            out.replays += 1
            if frame.get("to_seq") is not None:
                cursor = max(cursor or 0, frame["to_seq"])
        elif kind == "resync_required":
            pending = (cursor, str(frame.get("reason", "")))
        elif kind == "area_of_interest":
            out.snapshots += 1
            version = frame["snapshot_version"]
            if first_view is None:
                first_view = version
            elif pending is not None:
                at = pending[0] if pending[0] is not None else int(min(stream.first_past(first_view),
                                                                           stream.last + 1)) - 1
                out.resyncs.append(judge_resync(stream, at, version, pending[1], threshold))
                windows.append((at, version, stream.first_past(version)))
            pending = None
    if first_view is None:
        return out
    presence_from = stream.first_past(first_view)
    cutoff = None if left_at is None or cursor is not None else left_at - LEAVE_MARGIN_S
    for m in stream.from_seq(presence_from):  # world_updates past the first snapshot start there too
        if cutoff is not None and m.stored_at > cutoff:
            break
        is_update = m.kind == "world_update"
        if (is_update and (m.version or 0) <= first_view) or (m.kind == "presence" and m.about == user):
            continue
        covered = any(after < m.seq and ((m.version or 0) <= version if is_update else m.seq < until)
                      for after, version, until in windows)
        (out.forgiven if covered else out.due).add(m.seq)
    return out
