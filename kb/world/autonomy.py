"""The world moving on its own: one pure tick of NPC walks, weather, time of day and respawns."""
from __future__ import annotations

from typing import Any

from kb.world.content import Content
from kb.world.model import World, edit
from kb.world.rules import Outcome, ScopedChange


def tick(content: Content, world: World, now_ms: int) -> Outcome:
    """Advance the world clock by one tick; every change it makes is one committed version."""
    new = edit(world, "areas", "npcs", "environment", "respawns", "clock")
    number = new["clock"]["tick"] = world["clock"]["tick"] + 1
    changes: list[ScopedChange] = []
    changes += _walk_npcs(content, new, number)
    changes += _advance_environment(content, new, number)
    changes += _respawn_due(content, new, now_ms)
    messages = [c.change.get("path", c.change["operation"]) for c in changes]
    return Outcome(True, f"tick {number}: " + ", ".join(str(m) for m in messages), tuple(changes), new)


def _walk_npcs(content: Content, world: World, number: int) -> list[ScopedChange]:
    """Each NPC with a route steps to the next area on it."""
    changes = []
    for npc_id, npc in world["npcs"].items():
        route = content.npcs[npc_id].get("route") or []
        if len(route) < 2:
            continue
        target = route[number % len(route)]
        if target == npc["area_id"]:
            continue
        npc["area_id"] = target
        change = {"operation": "update", "area_id": target, "path": f"npcs.{npc_id}.area_id", "value": target}
        # Public under `location` too: every snapshot lists every NPC where it stands (only what lies around is
        # hidden), so a move scoped to its two areas would leave the others' copies behind their next snapshot.
        changes.append(ScopedChange(change))
    return changes


def _advance_environment(content: Content, world: World, number: int) -> list[ScopedChange]:
    """Each environment value moves on through its cycle every `every` ticks (in name order within a tick)."""
    changes = []
    for key in sorted(content.environment):
        values, every = content.environment[key], content.cycle_every.get(key, 1)
        if len(values) < 2 or number % every:
            continue
        current = world["environment"].get(key, values[0])
        nxt = values[(values.index(current) + 1) % len(values)] if current in values else values[0]
        world["environment"][key] = nxt
        change = {"operation": "update", "area_id": None, "path": f"environment.{key}", "value": nxt}
        changes.append(ScopedChange(change))
    return changes


def _respawn_due(content: Content, world: World, now_ms: int) -> list[ScopedChange]:
    """Collectibles whose cooldown ended reappear, as new instances, where they first lay."""
    changes, waiting = [], []
    for entry in world["respawns"]:
        if entry["due_ms"] > now_ms:
            waiting.append(entry)
            continue
        world["clock"]["spawned"] = world["clock"].get("spawned", 0) + 1
        instance_id = f"{entry['template_id']}_r{world['clock']['spawned']}"
        item: dict[str, Any] = content.make_item(instance_id, entry["template_id"])
        world["areas"][entry["area_id"]]["spots"][entry["spot_id"]]["items"].append(item)
        change = {"operation": "add", "area_id": entry["area_id"], "spot_id": entry["spot_id"],
                  "instance_id": instance_id, "template_id": entry["template_id"], "item": item}
        changes.append(ScopedChange(change, areas=(entry["area_id"],)))
    world["respawns"] = waiting
    return changes
