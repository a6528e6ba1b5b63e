"""Schema validation of bus events, done once per distinct content rather than once per session."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from marshmallow import ValidationError

from shared.broadcast import copy_body, visible_indexes
from shared.schemas.events import validate_broadcast

CACHE_SIZE = 4096


class Broadcast:
    """One validated message of an experience subject, and the per-player frames made from it.

    Players who may see the same changes share one encoded body; each frame only adds its own
    `seq` and `user_id` in front, so a change seen by a thousand players is encoded a few times.
    """

    def __init__(self, payload: bytes, event: dict[str, Any]) -> None:
        self.payload = payload
        self.event = event
        self._bodies: dict[tuple[int, ...], bytes] = {}

    def frame_for(self, seq: int, user_id: str) -> bytes | None:
        """This player's frame, or None if the message is not for them (their own presence)."""
        event = self.event
        if event["type"] == "presence":
            return None if event["user_id"] == user_id else b'{"seq":%d,%s' % (seq, self.payload[1:])
        indexes = visible_indexes(event, user_id)
        body = self._bodies.get(indexes)
        if body is None:
            body = self._bodies[indexes] = orjson.dumps(copy_body(event, indexes))
        return b'{"seq":%d,"user_id":%s,%s' % (seq, orjson.dumps(user_id), body[1:])


class EventValidator:
    """Validates events with the marshmallow schemas, remembering contents it has already accepted.

    Broadcasts (one per commit, on the experience subject) are validated once per gateway, however
    many sessions receive them.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._broadcasts: OrderedDict[bytes, Broadcast] = OrderedDict()
        self.validated = 0
        self.reused = 0

    def broadcast(self, payload: bytes) -> Broadcast:
        """A message of an experience subject, validated once however many sessions receive it."""
        found = self._broadcasts.get(payload)
        if found is not None:
            self._broadcasts.move_to_end(payload)
            self.reused += 1
            return found
        found = Broadcast(payload, validate_broadcast(orjson.loads(payload)))
        self.validated += 1
        self._broadcasts[payload] = found
        if len(self._broadcasts) > self.size:
            self._broadcasts.popitem(last=False)
        return found
