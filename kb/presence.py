"""Who is present in which experience, from gateway reports, with a grace period for dropped phones."""
from __future__ import annotations

from dataclasses import dataclass, field


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
    """Sessions by id; a user is present while any of their sessions is live or inside its grace."""

    grace_s: float
    stale_s: float
    sessions: dict[str, SessionEntry] = field(default_factory=dict)

    def present_users(self, experience: str) -> set[str]:
        """Users who receive events of this experience (live sessions and those in grace)."""
        return {s.user_id for s in self.sessions.values() if s.experience == experience}

    def _snapshot(self) -> set[tuple[str, str]]:
        return {(s.experience, s.user_id) for s in self.sessions.values()}

    def _diff(self, before: set[tuple[str, str]]) -> list[PresenceChange]:
        after = self._snapshot()
        joins = [PresenceChange("join", u, e) for e, u in sorted(after - before)]
        leaves = [PresenceChange("leave", u, e) for e, u in sorted(before - after)]
        return joins + leaves

    def join(self, session_id: str, user_id: str, experience: str, gateway_id: str, now: float) -> list[PresenceChange]:
        """A session opened (or a gateway re-announced it)."""
        before = self._snapshot()
        self.sessions[session_id] = SessionEntry(user_id, experience, gateway_id, now)
        return self._diff(before)

    def leave(self, session_id: str) -> list[PresenceChange]:
        """A clean close: the session goes at once."""
        before = self._snapshot()
        self.sessions.pop(session_id, None)
        return self._diff(before)

    def drop(self, session_id: str, now: float) -> list[PresenceChange]:
        """A lost connection: the session lingers for the grace period."""
        entry = self.sessions.get(session_id)
        if entry is not None and entry.dropped_at is None:
            entry.dropped_at = now
        return []

    def alive(self, session_id: str, user_id: str, experience: str, gateway_id: str, now: float) -> list[PresenceChange]:
        """A gateway's periodic renewal of a live session."""
        entry = self.sessions.get(session_id)
        if entry is None or entry.dropped_at is not None:
            return self.join(session_id, user_id, experience, gateway_id, now)
        entry.seen_at = now
        return []

    def expire(self, now: float) -> list[PresenceChange]:
        """End sessions whose grace ran out, or whose gateway stopped renewing them."""
        before = self._snapshot()
        for sid, entry in list(self.sessions.items()):
            graced_out = entry.dropped_at is not None and now - entry.dropped_at >= self.grace_s
            silent = entry.dropped_at is None and now - entry.seen_at >= self.stale_s
            if graced_out:
                del self.sessions[sid]
            elif silent:
                entry.dropped_at = now  # its gateway went quiet: treat as a dropped phone
        return self._diff(before)
