"""Live sessions of this gateway, by transport and by user."""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from shared.schemas.errors import CloseCode

SLOW_CONSUMER = CloseCode.SLOW_CONSUMER


class Closable(Protocol):
    """Anything the registry can close on shutdown (a WebSocket session or an SSE stream)."""

    conn_id: str
    user_id: str
    transport: str

    async def shutdown(self, code: int, reason: str) -> None: ...


class SessionRegistry:
    """Who is connected here; counts per user enforce the sessions-per-user limit."""

    def __init__(self) -> None:
        self.sessions: dict[str, Closable] = {}
        self.per_user: Counter[str] = Counter()
        self.closed_by_code: Counter[int] = Counter()
        self.frames_dropped_slow = 0  # frames still queued when a session was closed as a slow consumer

    def add(self, session: Closable) -> None:
        self.sessions[session.conn_id] = session
        self.per_user[session.user_id] += 1

    def remove(self, session: Closable, close_code: int | None = None) -> None:
        if close_code is not None:
            self.closed_by_code[close_code] += 1
            if close_code == SLOW_CONSUMER:
                self.frames_dropped_slow += len(getattr(session, "queue", ()))
        if self.sessions.pop(session.conn_id, None) is not None:
            self.per_user[session.user_id] -= 1
            if self.per_user[session.user_id] <= 0:
                del self.per_user[session.user_id]

    def count_for(self, user_id: str) -> int:
        return self.per_user.get(user_id, 0)

    def counts(self) -> dict[str, Any]:
        """Session counts by transport, for /health and metrics."""
        by_transport = Counter(s.transport for s in self.sessions.values())
        return {"total": len(self.sessions), "websocket": by_transport.get("websocket", 0),
                "sse": by_transport.get("sse", 0), "users": len(self.per_user)}
