"""The legacy SSE chat request (POST /chat/unified) and the frames it streams back."""
from __future__ import annotations

import time
import uuid
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate

MODEL = "gaia-intents-1"


class ChatRequestSchema(Schema):
    """{"message", "experience", "stream"?, "conversation_id"?}."""

    class Meta:
        unknown = EXCLUDE

    message = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    experience = fields.String(required=True, validate=validate.Length(min=1, max=128))
    stream = fields.Boolean(load_default=True)
    conversation_id = fields.String(load_default=lambda: uuid.uuid4().hex, validate=validate.Length(min=1, max=128))


def start_metadata(conversation_id: str, model: str = MODEL) -> dict[str, Any]:
    """The first frame of a chat stream."""
    return {"type": "metadata", "conversation_id": conversation_id, "model": model,
            "timestamp": int(time.time() * 1000)}


def completion_chunk(conversation_id: str, content: str, model: str = MODEL) -> dict[str, Any]:
    """One narrative chunk in OpenAI `chat.completion.chunk` form."""
    return {"id": f"chatcmpl-{conversation_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


def end_metadata(first_chunk_ms: float, total_ms: float, narrator: str = "builtin", reason: str | None = None,
                 action: str | None = None, success: bool = False) -> dict[str, Any]:
    """What the chat did, its timings and who wrote the narrative (as in `chat_done`), sent after the narrative."""
    frame: dict[str, Any] = {"type": "metadata", "action": action, "success": success,
                             "time_to_first_chunk_ms": round(first_chunk_ms, 2), "total_time_ms": round(total_ms, 2),
                             "narrator": narrator}
    if reason:
        frame["reason"] = reason
    return frame


def done(finish_reason: str = "stop") -> dict[str, Any]:
    return {"type": "done", "finish_reason": finish_reason}


def narrative_chunks(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split narrative text into small chunks that keep their spacing."""
    words = text.split(" ")
    return [" ".join(words[i:i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
            for i in range(0, len(words), words_per_chunk)]
