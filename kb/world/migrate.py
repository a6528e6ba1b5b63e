"""A world made from one version of an experience's content, moved to another: the rules of docs/authoring.md.

Pure. kb applies it when it starts on changed content (a new version of the world) and, in development,
when content is reloaded while it runs; the result is committed as one version step every client
answers with a fresh snapshot.
"""
from __future__ import annotations

import copy
from typing import Any

from kb.world.content import Content
from kb.world.model import World, place_instances


def adopt(content: Content, world: World) -> tuple[World, list[str]]:
    """`world` under `content`, and one note per kind of thing that had to change (empty: nothing did)."""
    notes: list[str] = []
    areas = _areas(content, world, notes)
    placed = set(world["placed"] if "placed" in world else _content_ids(content))
    new_ids = sorted({i["instance_id"] for i in content.instances} - placed)
    place_instances(content, areas, [i for i in content.instances if i["instance_id"] in new_ids])
    if new_ids:
        notes.append(f"{len(new_ids)} new item(s) placed: {', '.join(new_ids)}")
    players = {user: adopt_player(content, player, notes) for user, player in world["players"].items()}
    adopted = {
        **world,
        "zone": dict(content.zone),
        "areas": areas,
        "players": players,
        "npcs": _npcs(content, world, notes),
        "environment": _environment(content, world),
        "respawns": [r for r in world["respawns"] if r["template_id"] in content.templates
                     and r["spot_id"] in areas.get(r["area_id"], {}).get("spots", {})],
        "content_version": content.fingerprint,
        "placed": sorted(placed | set(new_ids)),
    }
    return adopted, _counted(notes)


def _content_ids(content: Content) -> list[str]:
    """A world saved before it kept `placed` has placed every instance its content had: assume today's."""
    return [i["instance_id"] for i in content.instances]


def _areas(content: Content, world: World, notes: list[str]) -> dict[str, Any]:
    """The content's areas, each keeping the items lying in it (on the same spot, or its first spot if that went)."""
    areas: dict[str, Any] = {}
    for area_id, area in content.areas.items():
        spots = {spot_id: {"id": spot_id, "name": spot["name"], "description": spot.get("description", ""), "items": []}
                 for spot_id, spot in area.get("spots", {}).items()}
        for spot_id, spot in world["areas"].get(area_id, {}).get("spots", {}).items():
            target = spot_id if spot_id in spots else next(iter(spots), None)
            for item in spot["items"]:
                kept = _item(content, item, notes)
                if kept is not None and target is not None:
                    spots[target]["items"].append(kept)
                elif kept is not None:
                    notes.append(f"item gone with its area's last spot: {item['instance_id']}")
        areas[area_id] = {"id": area_id, "name": area["name"], "description": area["description"],
                          "exits": list(area.get("exits", [])), "spots": spots}
    for area_id in world["areas"]:
        if area_id not in content.areas:
            notes.append(f"area removed: {area_id} (with what lay in it)")
    return areas


def _item(content: Content, item: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """An item under the new content: its template's current words, its state kept; None if its template went."""
    if item["template_id"] not in content.templates:
        notes.append(f"item gone with its template: {item['instance_id']}")
        return None
    state = copy.deepcopy(item["state"])
    if "contents" in state:
        state["contents"] = [kept for inner in state["contents"] if (kept := _item(content, inner, notes))]
    return content.make_item(item["instance_id"], item["template_id"], state)


def adopt_player(content: Content, player: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """A saved player under the new content: moved to the start if its area went, items of gone templates dropped."""
    notes = [] if notes is None else notes
    inventory = [kept for item in player["inventory"] if (kept := _item(content, item, notes))]
    here = player["current_area"]
    if here not in content.areas:
        notes.append(f"player moved to the start area: from {here}")
        here = content.start_area
    adopted = {**player, "current_location": content.zone["id"], "current_area": here, "inventory": inventory}
    return player if adopted == player else adopted  # unchanged players keep their object: no row to write


def _npcs(content: Content, world: World, notes: list[str]) -> dict[str, Any]:
    """The content's NPCs, each where it stood if that area is still there, else where the content puts it."""
    npcs = {}
    for npc_id, npc in content.npcs.items():
        stood = world["npcs"].get(npc_id, {}).get("area_id")
        npcs[npc_id] = {"id": npc_id, "name": npc["name"], "description": npc["description"],
                        "area_id": stood if stood in content.areas else npc["area_id"]}
    notes += [f"npc removed: {npc_id}" for npc_id in world["npcs"] if npc_id not in content.npcs]
    return npcs


def _environment(content: Content, world: World) -> dict[str, str]:
    """Each cycle's current value if it is still in the cycle, else the cycle's first."""
    now = world["environment"]
    return {key: now[key] if now.get(key) in values else values[0] for key, values in content.environment.items()
            if values}


def _counted(notes: list[str]) -> list[str]:
    """Notes of one kind counted once ("item gone with its template: a, b")."""
    kinds: dict[str, list[str]] = {}
    for note in notes:
        kind, _, what = note.partition(": ")
        kinds.setdefault(kind, []).append(what)
    return [f"{kind}: {', '.join(sorted(set(whats)))}" if any(whats) else kind for kind, whats in kinds.items()]
