"""A resync's snapshot checked against the world at its version: the player's world before it, moved on by
the stream's own events (each as this player's copy) up to the snapshot's version, must equal it.

kb keeps no past versions to ask; the stream does: every commit is one broadcast on the experience
subject, so the world at version V is the last good world plus the broadcasts up to V.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from harness.client.world import LocalWorld, normalise
from gateway.streams.audience import personal_copy

log = logging.getLogger(__name__)


@dataclass
class SnapshotCheck:
    """How many resync snapshots were compared, and what differed."""

    checked: int = 0
    mismatches: list[str] = field(default_factory=list)


def expected_at(world: LocalWorld, updates: dict[int, dict[str, Any]], user: str, version: int) -> LocalWorld:
    """`world` moved on by the stream's broadcasts (this player's copies) up to `version`."""
    shadow = copy.deepcopy(world)
    for v in range(shadow.version + 1, version + 1):
        event = updates.get(v)
        if event is None:
            break  # the stream does not hold it: the comparison below reports the version
        shadow.apply({**personal_copy(event, user), "type": "world_update"})
    return shadow


def check_snapshots(frames: list[dict[str, Any]], updates: dict[int, dict[str, Any]], user: str) -> SnapshotCheck:
    """Replay one player's frames; every snapshot that follows a `resync_required` is compared with the
    world the stream yields at its version (`updates`: broadcast world_updates by snapshot_version)."""
    out = SnapshotCheck()
    world = LocalWorld()
    resync = False
    for frame in frames:
        kind = frame.get("type")
        if kind == "resync_required":
            resync = True
        elif kind == "area_of_interest" and resync and world.view is not None:
            resync = False
            version = frame["snapshot_version"]
            out.checked += 1
            shadow = expected_at(world, updates, user, version)
            got = normalise({k: v for k, v in frame.items() if k != "type"})
            if shadow.version != version:
                out.mismatches.append(f"{user}: snapshot v{version}, the stream reaches only v{shadow.version}")
            elif normalise(shadow.view or {}) != got:
                out.mismatches.append(f"{user}: snapshot v{version} differs from the world the stream yields there")
        world.apply(frame)
    return out
