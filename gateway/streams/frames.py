"""Schema validation of bus events, done once per distinct content rather than once per session."""
from __future__ import annotations

import logging
from typing import Any

import orjson
from marshmallow import ValidationError

from gateway.streams.audience import copy_body
from gateway.streams.frameformat import event_head
from gateway.streams.timings import EventTimings
from shared.schemas.events import validate_broadcast

log = logging.getLogger(__name__)
CACHE_SIZE = 4096


class InvalidBroadcast(ValueError):
    """A message of an experience subject that is not a valid broadcast (logged once per process)."""


class Broadcast:
    """One validated message of an experience subject, and the per-player frames made from it.

    Players who may see the same changes share one encoded body; each frame only puts its own
    `user_id` between a prefix and that body, so a change seen by a thousand players is encoded a
    few times and each copy costs one concatenation.
    """

    __slots__ = ("event", "_head", "_tail", "_whole", "_about", "_bodies", "_seen_by", "_for_all")

    def __init__(self, seq: int, payload: bytes, event: dict[str, Any]) -> None:
        self.event = event
        self._bodies: dict[tuple[int, ...], bytes] = {}
        self._seen_by: dict[str, tuple[int, ...]] | None = None  # who sees which changes, built at the first copy
        self._for_all: tuple[int, ...] = ()
        self._about: str | None = None
        self._head = event_head(seq) + b'"user_id":'
        self._tail: bytes | None = None  # the shared part when every player gets the same copy
        self._whole: bytes | None = None  # the whole frame, when it carries no user_id (presence)
        if event["type"] in ("presence", "presence_batch"):  # in a batch a player skips its own entries
            self._about = event.get("user_id")
            self._whole = event_head(seq) + payload[1:]
        elif all(who is None for who in event["audience"]):
            self._tail = b"," + orjson.dumps(copy_body(event, tuple(range(len(event["changes"])))))[1:]

    def frame_for(self, user_id: str, user_json: bytes) -> bytes | None:
        """This player's frame (`user_json` is their id, JSON-encoded), or None for their own presence."""
        if self._whole is not None:
            return None if self._about == user_id else self._whole
        if self._tail is not None:
            return self._head + user_json + self._tail
        seen_by = self._seen_by
        if seen_by is None:
            seen_by = self._audiences()
        indexes = seen_by.get(user_id, self._for_all)
        body = self._bodies.get(indexes)
        if body is None:
            body = self._bodies[indexes] = b"," + orjson.dumps(copy_body(self.event, indexes))[1:]
        return self._head + user_json + body

    def _audiences(self) -> dict[str, tuple[int, ...]]:
        """Each named player's visible changes, found in one pass over the audience lists per event (a
        scan of every list for every copy costs a thousand players a million membership tests)."""
        audience = self.event["audience"]
        self._for_all = tuple(i for i, who in enumerate(audience) if who is None)
        seen: dict[str, list[int]] = {}
        for index, who in enumerate(audience):
            if who is None:
                for shown in seen.values():
                    shown.append(index)
                continue
            for user in who["only"]:
                mine = seen.get(user)
                if mine is None:
                    seen[user] = [i for i in self._for_all if i < index] + [index]
                elif mine[-1] != index:
                    mine.append(index)
        self._seen_by = {user: tuple(shown) for user, shown in seen.items()}
        return self._seen_by


class EventValidator:
    """Validates broadcasts with the marshmallow schemas once per gateway, however many sessions
    receive them, remembered by stream sequence (a stored message never changes)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._broadcasts: dict[int, Broadcast] = {}
        self._invalid: dict[int, InvalidBroadcast] = {}  # so a bad message costs one check and one log line
        self.timings = EventTimings()  # the latency split's stamps (GET /debug/event-timings)
        self.validated = 0
        self.reused = 0

    def broadcast(self, seq: int, payload: bytes) -> Broadcast:
        """The message at stream sequence `seq`, validated on its first delivery to this gateway;
        InvalidBroadcast (logged the first time) if it is not a valid broadcast."""
        found = self._broadcasts.get(seq)
        if found is not None:
            self.reused += 1
            return found
        if seq in self._invalid:
            raise self._invalid[seq]
        try:
            found = Broadcast(seq, payload, validate_broadcast(orjson.loads(payload)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.error("dropped invalid event seq=%d: %s", seq, exc)
            self._invalid[seq] = error = InvalidBroadcast(f"seq {seq}: {exc}")
            _keep_newest(self._invalid, self.size)
            raise error from None
        self.timings.received(seq, found.event)
        self.validated += 1
        self._broadcasts[seq] = found
        _keep_newest(self._broadcasts, self.size)
        return found


def _keep_newest(by_seq: dict[int, Any], size: int) -> None:
    """Drop the oldest sequence once a cache holds more than `size`."""
    if len(by_seq) > size:
        del by_seq[next(iter(by_seq))]
