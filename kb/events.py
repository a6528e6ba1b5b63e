"""Turning one committed outcome into ONE broadcast event on the experience subject (the gateway fans out)."""
from __future__ import annotations

import logging
import secrets
from typing import Any

import orjson

from kb.world.rules import Outcome, ScopedChange
from shared.schemas.events import EVENT_VERSION, BroadcastWorldUpdateSchema
from shared.subjects import experience_updates

log = logging.getLogger(__name__)
_BROADCAST_SCHEMA = BroadcastWorldUpdateSchema()
OutboxEvent = tuple[str, str, bytes]


def audience(scoped: ScopedChange, actor_id: str, visibility: str,
             whereabouts: dict[str, str]) -> dict[str, list[str]] | None:
    """Who may see this change under the experience's visibility rule (None: everyone in the experience).

    `whereabouts` maps every present player to its area, including players who have not acted yet
    (they stand at the start): under `location`, those in the change's areas see it.
    """
    if scoped.private_to is not None:
        return {"only": [scoped.private_to]}
    if visibility == "global" or (visibility == "location" and not scoped.areas):
        return None
    if visibility == "none":
        return {"only": [actor_id]}
    inside = {uid for uid, area in whereabouts.items() if area in scoped.areas}
    return {"only": sorted(inside | {actor_id})}


def world_update_events(outcome: Outcome, *, experience: str, actor_id: str, visibility: str, base_version: int,
                        now_ms: int, trace_id: str, whereabouts: dict[str, str] | None = None) -> list[OutboxEvent]:
    """The commit's one broadcast; a player who may see none of its changes still gets the version step."""
    world = outcome.world
    assert world is not None
    commit_id = secrets.token_hex(8)
    log.info("commit %s v%d trace %s", commit_id, base_version + 1, trace_id[:128])
    event: dict[str, Any] = {
        "type": "world_update", "version": EVENT_VERSION, "experience": experience, "actor_id": actor_id,
        "base_version": base_version, "snapshot_version": base_version + 1, "timestamp": now_ms,
        "changes": [c.change for c in outcome.changes],
        "audience": [audience(c, actor_id, visibility, whereabouts or {}) for c in outcome.changes],
        # Every player gets this: an opaque id of the commit, never the caller's trace (user text,
        # connection ids). The caller's trace is in kb's log beside this id.
        "metadata": {"source": "kb", "trace_id": commit_id},
    }
    _BROADCAST_SCHEMA.load(event)  # a bad rule output fails here, before commit (every copy is a subset)
    # Unguessable: a forger who could predict it would make JetStream drop our event as a duplicate.
    msg_id = f"{experience}:{base_version + 1}:{commit_id}"
    return [(msg_id, experience_updates(experience), orjson.dumps(event))]


def presence_event(*, experience: str, user_id: str, event: str, area_id: str | None, now_ms: int,
                   nonce: str) -> OutboxEvent:
    """One `presence` join/leave for the experience; every other player's session forwards it."""
    body = {"type": "presence", "event": event, "user_id": user_id, "experience": experience,
            "area_id": area_id, "timestamp": now_ms}
    return (f"presence:{experience}:{user_id}:{event}:{nonce}", experience_updates(experience), orjson.dumps(body))


def presence_batch_event(*, experience: str, changes: list[dict[str, Any]], now_ms: int, nonce: str) -> OutboxEvent:
    """Several players' joins and leaves of one window in one frame; every player gets the same copy."""
    body = {"type": "presence_batch", "experience": experience, "changes": changes, "timestamp": now_ms}
    return (f"presence-batch:{experience}:{nonce}", experience_updates(experience), orjson.dumps(body))
