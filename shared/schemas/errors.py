"""Error codes for `error` frames and WebSocket close codes, as named in the protocol."""
from __future__ import annotations

from typing import Any


class ErrorCode:
    """Values of the `code` field of an `error` frame, and of the `error` field of an HTTP error body."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    UNKNOWN_ACTION = "unknown_action"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ACTIONS = "too_many_actions"
    KB_UNAVAILABLE = "kb_unavailable"
    UNKNOWN_EXPERIENCE = "unknown_experience"
    INTERNAL_ERROR = "internal_error"
    TOKEN_EXPIRED = "token_expired"
    RESERVED_USER_ID = "reserved_user_id"  # a token's sub names the world or one of its NPCs
    TOO_MANY_SESSIONS = "too_many_sessions"  # the user holds the most connections allowed (close code 4409)


class CloseCode:
    """WebSocket close codes used by the gateway."""

    NORMAL = 1000
    BAD_REQUEST = 4400
    GOING_AWAY = 1001
    UNEXPECTED = 1011
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    SLOW_CONSUMER = 4408
    FRAME_TOO_LARGE = 4413
    TOO_MANY_MESSAGES = 4429
    TOO_MANY_SESSIONS = 4409


class ProtocolError(Exception):
    """An expected client mistake that becomes an `error` frame; the session stays open."""

    def __init__(self, code: str, message: str, msg_id: Any = None, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        self.details = details
