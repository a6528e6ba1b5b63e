"""Each player's copy of a broadcast event: the one rule kb, gateway and tests share."""
from __future__ import annotations

from typing import Any


def visible_indexes(event: dict[str, Any], user_id: str) -> tuple[int, ...]:
    """Positions of the changes this player may see."""
    return tuple(i for i, who in enumerate(event["audience"]) if who is None or user_id in who["only"])


def personal_copy(event: dict[str, Any], user_id: str, indexes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The WorldUpdateEvent v0.4 this player receives (audience removed, user_id set)."""
    if indexes is None:
        indexes = visible_indexes(event, user_id)
    copy = {k: v for k, v in event.items() if k not in ("audience", "seq")}
    copy["user_id"] = user_id
    copy["changes"] = [event["changes"][i] for i in indexes]
    return copy
