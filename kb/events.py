"""Turning one committed outcome into per-recipient WorldUpdateEvents (encoded once each)."""
from __future__ import annotations

from typing import Any, Iterable

import orjson

from kb.world.model import World
from kb.world.rules import Outcome, ScopedChange
from shared.schemas.events import EVENT_VERSION, WorldUpdateEventSchema
from shared.subjects import user_updates

_EVENT_SCHEMA = WorldUpdateEventSchema()
OutboxEvent = tuple[str, str, bytes]


def visible_to(scoped: ScopedChange, recipient: str, actor_id: str, visibility: str, world: World) -> bool:
    """May this recipient see this change under the experience's visibility rule?"""
    if scoped.private_to is not None:
        return scoped.private_to == recipient
    if recipient == actor_id or visibility == "global":
        return True
    if visibility == "none":
        return False
    player = world["players"].get(recipient)
    return not scoped.areas or (player is not None and player["current_area"] in scoped.areas)


def world_update_events(outcome: Outcome, *, experience: str, actor_id: str, recipients: Iterable[str],
                        visibility: str, base_version: int, now_ms: int, trace_id: str) -> list[OutboxEvent]:
    """One event per recipient; those who see nothing still get the version step (empty changes)."""
    world = outcome.world
    assert world is not None
    events = []
    for recipient in sorted(set(recipients)):
        changes = [c.change for c in outcome.changes if visible_to(c, recipient, actor_id, visibility, world)]
        event: dict[str, Any] = {
            "type": "world_update", "version": EVENT_VERSION, "experience": experience,
            "user_id": recipient, "actor_id": actor_id,
            "base_version": base_version, "snapshot_version": base_version + 1,
            "timestamp": now_ms, "changes": changes,
            "metadata": {"source": "kb", "trace_id": trace_id},
        }
        if recipient == actor_id:
            _EVENT_SCHEMA.load(event)  # the fullest copy; a bad rule output fails here, before commit
        msg_id = f"{experience}:{base_version + 1}:{recipient}"
        events.append((msg_id, user_updates(recipient), orjson.dumps(event)))
    return events


def presence_events(*, experience: str, user_id: str, event: str, area_id: str | None, recipients: Iterable[str],
                    now_ms: int, nonce: str) -> list[OutboxEvent]:
    """`presence` join/leave for every other present player."""
    body = {"type": "presence", "event": event, "user_id": user_id, "experience": experience,
            "area_id": area_id, "timestamp": now_ms}
    payload = orjson.dumps(body)
    return [(f"presence:{experience}:{user_id}:{event}:{nonce}:{r}", user_updates(r), payload)
            for r in sorted(set(recipients)) if r != user_id]
