"""Schema validation of bus events, done once per distinct content rather than once per recipient."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from marshmallow import ValidationError

from shared.schemas.events import validate_stream_event

CACHE_SIZE = 4096


class EventValidator:
    """Validates events with the marshmallow schemas, remembering contents it has already accepted.

    kb addresses one copy of a change to every player; the copies differ only in `user_id`. The
    copy is checked to be addressed to the receiving user, then validated under a key with that
    field removed, so a change seen by a thousand players is validated a handful of times.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._accepted: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self.validated = 0
        self.reused = 0

    def check(self, payload: bytes, user_id: str) -> dict[str, Any]:
        """The loaded event (shared, read-only) or ValidationError / orjson.JSONDecodeError."""
        addressed = payload.startswith(b'{"type":"world_update"')  # presence names its subject, not us
        marker = b'"user_id":"%s"' % user_id.encode()
        if addressed and marker not in payload:
            raise ValidationError("event is not addressed to this user", "user_id")
        key = payload.replace(marker, b"", 1) if addressed else payload
        event = self._accepted.get(key)
        if event is not None:
            if not addressed and event["type"] == "world_update" and event["user_id"] != user_id:
                raise ValidationError("event is not addressed to this user", "user_id")
            self._accepted.move_to_end(key)
            self.reused += 1
            return event
        event = validate_stream_event(orjson.loads(payload))
        if event["type"] == "world_update" and event["user_id"] != user_id:
            raise ValidationError("event is not addressed to this user", "user_id")
        self.validated += 1
        self._accepted[key] = event
        if len(self._accepted) > self.size:
            self._accepted.popitem(last=False)
        return event
