"""Per-player copies cut from one broadcast: each player sees exactly the changes its audience allows."""
from __future__ import annotations

import random
from typing import Any

import orjson

from gateway.streams.frames import Broadcast
from gateway.streams.audience import personal_copy


def event_with(audience: list[dict[str, Any] | None]) -> dict[str, Any]:
    """A world_update with one change per audience entry."""
    return {"type": "world_update", "version": "0.4", "experience": "wylding-woods", "actor_id": "a",
            "base_version": 1, "snapshot_version": 2, "timestamp": 1,
            "changes": [{"operation": "update", "area_id": None, "path": f"environment.n{i}", "value": i}
                        for i in range(len(audience))], "audience": audience}


def test_copies_match_the_audience_rule_for_mixed_and_repeated_audiences() -> None:
    rng = random.Random(33)
    users = [f"p{i}" for i in range(40)]
    for _ in range(200):
        audience: list[dict[str, Any] | None] = [
            None if rng.random() < 0.3 else {"only": rng.choices(users, k=rng.randint(1, 12))}
            for _ in range(rng.randint(1, 6))]
        event = event_with(audience)
        broadcast = Broadcast(5, orjson.dumps(event), event)
        for user in users + ["stranger"]:
            frame = broadcast.frame_for(user, orjson.dumps(user))
            assert frame is not None
            assert orjson.loads(frame) == {"seq": 5, **personal_copy(event, user)}, (audience, user)
