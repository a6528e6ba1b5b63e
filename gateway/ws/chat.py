"""`chat` on the WebSocket: the shared chat pipeline, shown through a session's snapshot gate."""
from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.chat.pipeline import ChatService
from gateway.delivery.gate import SnapshotGate
from gateway.metrics import GatewayMetrics
from shared.schemas.messages import error_frame


class SocketChat:
    """A chat's frames go through the session's gate, so they queue behind every event (and any
    snapshot) the session already has: the action's own world_update precedes the first chunk."""

    __slots__ = ("gate", "msg_id", "conversation_id")

    def __init__(self, gate: SnapshotGate[bytes], msg_id: Any, conversation_id: str) -> None:
        self.gate = gate
        self.msg_id = msg_id
        self.conversation_id = conversation_id

    async def events_through(self, version: int, timeout: float) -> bool:
        """Return once the world_update at `version` is queued for the socket."""
        return await self.gate.reached(version, timeout)

    async def chunk(self, delta: str) -> None:
        """One `chat_chunk`, in order behind what the socket already has."""
        self.gate.in_order(orjson.dumps({"type": "chat_chunk", "id": self.msg_id,
                                         "conversation_id": self.conversation_id, "delta": delta}))


async def socket_chat(message: dict[str, Any], gate: SnapshotGate[bytes], chat: ChatService, metrics: GatewayMetrics,
                      user_id: str, experience: str, conn_id: str) -> None:
    """Run one `chat` message; it ends with `chat_done`, or an `error` with the chat's id."""
    sink = SocketChat(gate, message["id"], message.get("conversation_id") or uuid.uuid4().hex)
    metrics.chat_seen("websocket", user_id)
    outcome = await chat.run(user_id, experience, message["message"], sink.conversation_id, conn_id, sink)
    metrics.action_seconds.labels("chat").observe(outcome.total_ms / 1000)
    if outcome.error is not None:
        gate.in_order(orjson.dumps(error_frame(*outcome.error, sink.msg_id, outcome.details)))
        return
    done: dict[str, Any] = {
        "type": "chat_done", "id": sink.msg_id, "conversation_id": sink.conversation_id, "action": outcome.action,
        "success": outcome.success, "time_to_first_chunk_ms": round(outcome.first_chunk_ms, 2),
        "total_time_ms": round(outcome.total_ms, 2), "narrator": outcome.narrator}
    if outcome.reason:
        done["reason"] = outcome.reason
    gate.in_order(orjson.dumps(done))
