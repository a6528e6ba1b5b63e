"""Live sessions of this gateway, by transport and by user."""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from shared.schemas.errors import CloseCode

SLOW_CONSUMER = CloseCode.SLOW_CONSUMER
# The codes a close is counted under (gaia_gateway_session_closes): a fixed set whatever a client sends,
# so a client's own code never becomes a metric series, nor passes for one of ours (4408).
SERVER_CODES = frozenset({1001, 1002, 1011, *(code for name, code in vars(CloseCode).items() if name.isupper())})
CLIENT_CODES = frozenset({1000, 1001, 1006})


def close_label(by_server: bool, code: int | None) -> tuple[str, str]:
    """(who closed, code) for the closes' metric: our own codes by the server, 1000/1001/1006 by the
    client (1006: the connection went without a close frame), anything else `other`."""
    if by_server:
        return "server", str(code) if code in SERVER_CODES else "other"
    return "client", str(code) if code in CLIENT_CODES else "other"


class Closable(Protocol):
    """Anything the registry can close on shutdown (a WebSocket session or an SSE stream)."""

    conn_id: str
    user_id: str
    transport: str

    async def shutdown(self, code: int, reason: str) -> None: ...


class SessionRegistry:
    """Who is connected here, by transport and by user (the edge counts what it admits for the limits)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Closable] = {}
        self.per_user: Counter[str] = Counter()
        self.closes: Counter[tuple[str, str]] = Counter()  # by close_label
        self.frames_dropped_slow = 0  # frames still queued when a session was closed as a slow consumer

    def add(self, session: Closable) -> None:
        self.sessions[session.conn_id] = session
        self.per_user[session.user_id] += 1

    @property
    def closed_by_code(self) -> Counter[int]:
        """Closes the server decided, by our code."""
        return Counter({int(code): n for (by, code), n in self.closes.items() if by == "server" and code != "other"})

    def remove(self, session: Closable, close: tuple[str, str] | None = None) -> None:
        """`close`: the session's close_label, when it is counted."""
        if close is not None:
            self.closes[close] += 1
            if close == ("server", str(SLOW_CONSUMER)):
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
