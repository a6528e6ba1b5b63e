"""Who is present in which experience, from gateway reports, with a grace period for dropped phones."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shared.incarnations import slot_and_start


@dataclass
class SessionEntry:
    """One gateway session as kb knows it."""

    user_id: str
    experience: str
    gateway_id: str
    seen_at: float
    dropped_at: float | None = None


@dataclass
class PresenceChange:
    """A user who became present or absent in an experience."""

    event: str
    user_id: str
    experience: str


@dataclass
class PresenceBook:
    """Sessions by id; a user is present while any of their sessions is live or inside its grace.

    Times are wall-clock seconds so the book survives a kb restart (it is persisted by the
    caller: `dirty` and `gone` name what changed since the last `take_changes`). A count of
    sessions per (experience, user) makes every change O(1): a connect storm into a world of
    ten thousand players must not rescan all of them per join.
    """

    grace_s: float
    stale_s: float
    sessions: dict[str, SessionEntry] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    _counts: dict[str, Counter[str]] = field(default_factory=dict)  # experience -> user -> sessions
    _live: dict[str, Counter[str]] = field(default_factory=dict)  # the same, live ones only (not dropped)
    _ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (experience, user) -> session ids
    generation: int = 0  # bumped whenever a user becomes present or absent anywhere
    incarnations: dict[str, int] = field(default_factory=dict)  # gateway slot -> newest start seen (ms)
    ended_by_restart: int = 0  # sessions dropped because a newer incarnation of their gateway reported

    def take_changes(self) -> tuple[list[tuple[str, str, str, str, float, float | None]], list[str]]:
        """Rows to upsert and session ids to delete since the last call."""
        upserts = [(sid, e.user_id, e.experience, e.gateway_id, e.seen_at, e.dropped_at)
                   for sid in self.dirty if (e := self.sessions.get(sid)) is not None]
        deletes = [sid for sid in self.gone if sid not in self.sessions]
        self.dirty, self.gone = set(), set()
        return upserts, deletes

    def restore(self, rows: list[tuple[str, str, str, str, float, float | None]]) -> None:
        """Load persisted sessions (after a restart)."""
        for sid, user_id, experience, gateway_id, seen_at, dropped_at in rows:
            self._add(sid, SessionEntry(user_id, experience, gateway_id, seen_at, dropped_at))
            slot, started = slot_and_start(gateway_id)
            self.incarnations[slot] = max(started, self.incarnations.get(slot, 0))

    def reload_experience(self, experience: str, rows: list[tuple[str, str, str, str, float, float | None]]) -> None:
        """Replace one experience's sessions with the persisted ones (another kb owned it meanwhile)."""
        for sid in [sid for sid, e in self.sessions.items() if e.experience == experience]:
            self._remove(sid)
        self.restore([row for row in rows if row[2] == experience])

    def present_users(self, experience: str) -> set[str]:
        """Users who receive events of this experience (live sessions and those in grace)."""
        return set(self._counts.get(experience, ()))

    def present_count(self, experience: str) -> int:
        """How many users are present in the experience."""
        return len(self._counts.get(experience, ()))

    def is_present(self, experience: str, user_id: str) -> bool:
        """True if the user has a live (or graced) session in the experience."""
        return user_id in self._counts.get(experience, ())

    def live_sessions(self, experience: str, user_id: str) -> int:
        """The user's open sessions in the experience, on every gateway (dropped ones in grace not counted)."""
        live: Counter[str] = self._live.get(experience, Counter())
        return live[user_id]

    def over_limit(self, session_id: str, user_id: str, experience: str, limit: int) -> bool:
        """True if this new session would take the user past `limit` open sessions (0: no limit)."""
        return bool(limit) and session_id not in self.sessions and self.live_sessions(experience, user_id) >= limit

    def _count_live(self, entry: SessionEntry, step: int) -> None:
        users = self._live.setdefault(entry.experience, Counter())
        users[entry.user_id] += step
        if users[entry.user_id] <= 0:
            del users[entry.user_id]

    def _add(self, session_id: str, entry: SessionEntry) -> list[PresenceChange]:
        """Put a session in (replacing one of the same id); a join if its user was not present."""
        changes = self._remove(session_id)
        self.sessions[session_id] = entry
        self._ids.setdefault((entry.experience, entry.user_id), set()).add(session_id)
        if entry.dropped_at is None:
            self._count_live(entry, 1)
        users = self._counts.setdefault(entry.experience, Counter())
        users[entry.user_id] += 1
        if users[entry.user_id] == 1:
            self.generation += 1
            changes.append(PresenceChange("join", entry.user_id, entry.experience))
        return _without_round_trips(changes)

    def _remove(self, session_id: str) -> list[PresenceChange]:
        """Take a session out; a leave if it was its user's last one."""
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return []
        ids = self._ids[(entry.experience, entry.user_id)]
        ids.discard(session_id)
        if not ids:
            del self._ids[(entry.experience, entry.user_id)]
        if entry.dropped_at is None:
            self._count_live(entry, -1)
        users = self._counts[entry.experience]
        users[entry.user_id] -= 1
        if users[entry.user_id] > 0:
            return []
        del users[entry.user_id]
        self.generation += 1
        return [PresenceChange("leave", entry.user_id, entry.experience)]

    def gateway_started(self, gateway_id: str, now: float) -> int:
        """A gateway process reported: if it is a newer incarnation of its slot, the sessions the older
        ones left behind are dropped now (their grace starts), not when their renewals would time out."""
        slot, started = slot_and_start(gateway_id)
        if started <= self.incarnations.get(slot, -1):
            return 0
        self.incarnations[slot] = started
        ended = 0
        for sid, entry in self.sessions.items():
            if entry.dropped_at is None and entry.gateway_id != gateway_id:
                old_slot, old_start = slot_and_start(entry.gateway_id)
                if old_slot == slot and old_start < started:
                    entry.dropped_at = now
                    self._count_live(entry, -1)
                    self.dirty.add(sid)
                    ended += 1
        self.ended_by_restart += ended
        return ended

    def join(self, session_id: str, user_id: str, experience: str, gateway_id: str, now: float) -> list[PresenceChange]:
        """A session opened (or a gateway re-announced it)."""
        self.gateway_started(gateway_id, now)
        self.dirty.add(session_id)
        return self._add(session_id, SessionEntry(user_id, experience, gateway_id, now))

    def leave(self, session_id: str) -> list[PresenceChange]:
        """A clean close: the session goes at once, and with its user's last live one the dropped ones in grace.

        A phone whose network went silent, resumed on a new socket and then closed cleanly has
        left: the grace of the silent socket is for a reconnect that has already happened.
        """
        entry = self.sessions.get(session_id)
        self.gone.add(session_id)
        changes = self._remove(session_id)
        if entry is None or self.live_sessions(entry.experience, entry.user_id):
            return changes
        for sid in list(self._ids.get((entry.experience, entry.user_id), ())):
            self.gone.add(sid)
            changes += self._remove(sid)
        return changes

    def drop(self, session_id: str, now: float) -> list[PresenceChange]:
        """A lost connection: the session lingers for the grace period."""
        entry = self.sessions.get(session_id)
        if entry is not None and entry.dropped_at is None:
            entry.dropped_at = now
            self._count_live(entry, -1)
            self.dirty.add(session_id)
        return []

    def alive(self, session_id: str, user_id: str, experience: str, gateway_id: str,
              now: float) -> list[PresenceChange]:
        """A gateway's periodic renewal of a live session."""
        self.gateway_started(gateway_id, now)
        entry = self.sessions.get(session_id)
        if entry is None or entry.dropped_at is not None:
            return self.join(session_id, user_id, experience, gateway_id, now)
        entry.seen_at = now
        self.dirty.add(session_id)
        return []

    def expire(self, now: float) -> list[PresenceChange]:
        """End sessions whose grace ran out, or whose gateway stopped renewing them."""
        changes: list[PresenceChange] = []
        for sid, entry in list(self.sessions.items()):
            graced_out = entry.dropped_at is not None and now - entry.dropped_at >= self.grace_s
            silent = entry.dropped_at is None and now - entry.seen_at >= self.stale_s
            if graced_out:
                changes += self._remove(sid)
                self.gone.add(sid)
            elif silent:
                entry.dropped_at = now  # its gateway went quiet: treat as a dropped phone
                self._count_live(entry, -1)
                self.dirty.add(sid)
        return changes


def _without_round_trips(changes: list[PresenceChange]) -> list[PresenceChange]:
    """A leave and a join of the same user in the same experience cancel out (a session re-announced)."""
    keys = [(c.user_id, c.experience) for c in changes]
    both = {k for k in keys if keys.count(k) > 1}
    return [c for c, k in zip(changes, keys, strict=True) if k not in both]
