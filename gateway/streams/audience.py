"""Each player's copy of a broadcast event, by its audience: the rule kb's events are written for (kb/events.py)."""
from __future__ import annotations

from typing import Any


def visible_indexes(event: dict[str, Any], user_id: str) -> tuple[int, ...]:
    """Positions of the changes this player may see."""
    return tuple(i for i, who in enumerate(event["audience"]) if who is None or user_id in who["only"])


def copy_body(event: dict[str, Any], indexes: tuple[int, ...]) -> dict[str, Any]:
    """The event with only the changes at `indexes`, without `audience` (and without `user_id`)."""
    body = {k: v for k, v in event.items() if k not in ("audience", "seq", "user_id")}
    body["changes"] = [event["changes"][i] for i in indexes]
    return body


def personal_copy(event: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The WorldUpdateEvent v0.4 this player receives (audience removed, user_id set)."""
    return {**copy_body(event, visible_indexes(event, user_id)), "user_id": user_id}
