"""`chat` on the WebSocket: the shared chat pipeline, shown through a session's ordered outbox."""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from shared.schemas.messages import error_frame

if TYPE_CHECKING:
    from gateway.session import Session


class SocketChat:
    """A chat's frames go through the session's gate, so they queue behind every event (and any
    snapshot) the session already has: the action's own world_update precedes the first chunk."""

    __slots__ = ("session", "msg_id", "conversation_id")

    def __init__(self, session: Session, msg_id: Any, conversation_id: str) -> None:
        self.session = session
        self.msg_id = msg_id
        self.conversation_id = conversation_id

    async def events_through(self, version: int, timeout: float) -> bool:
        return await self.session.gate.reached(version, timeout)

    async def chunk(self, delta: str) -> None:
        self.session.gate.in_order(orjson.dumps({"type": "chat_chunk", "id": self.msg_id,
                                                 "conversation_id": self.conversation_id, "delta": delta}))


async def socket_chat(session: Session, message: dict[str, Any]) -> None:
    """Run one `chat` message; it ends with `chat_done`, or an `error` with the chat's id."""
    deps = session.deps
    sink = SocketChat(session, message["id"], message.get("conversation_id") or uuid.uuid4().hex)
    deps.metrics.chat_seen("websocket", session.user_id)
    outcome = await deps.chat.run(session.user_id, session.experience, message["message"], sink.conversation_id,
                                  session.conn_id, sink)
    deps.metrics.action_seconds.labels("chat").observe(outcome.total_ms / 1000)
    if outcome.error is not None:
        session.gate.in_order(orjson.dumps(error_frame(*outcome.error, sink.msg_id, outcome.details)))
        return
    session.gate.in_order(orjson.dumps({
        "type": "chat_done", "id": sink.msg_id, "conversation_id": sink.conversation_id, "action": outcome.action,
        "success": outcome.success, "time_to_first_chunk_ms": round(outcome.first_chunk_ms, 2),
        "total_time_ms": round(outcome.total_ms, 2)}))
