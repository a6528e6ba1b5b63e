"""The world state as plain JSON-able dicts, and read-only views of it."""
from __future__ import annotations

import copy
from typing import Any, Iterator

from kb.world.content import Content

World = dict[str, Any]
# Players an uncommitted world copied for editing: its commit writes only their rows. Never stored.
TOUCHED = "_touched"


def initial_world(content: Content) -> World:
    """The world at version 0: content placed where the data files put it."""
    areas = {
        area_id: {
            "id": area_id,
            "name": area["name"],
            "description": area["description"],
            "exits": list(area.get("exits", [])),
            "spots": {
                spot_id: {"id": spot_id, "name": spot["name"], "description": spot.get("description", ""),
                          "items": []}
                for spot_id, spot in area.get("spots", {}).items()
            },
        }
        for area_id, area in content.areas.items()
    }
    place_instances(content, areas, content.instances)
    npcs = {
        npc_id: {"id": npc_id, "name": npc["name"], "description": npc["description"], "area_id": npc["area_id"]}
        for npc_id, npc in content.npcs.items()
    }
    environment = {key: values[0] for key, values in content.environment.items() if values}
    return {
        "experience": content.experience,
        "version": 0,
        "zone": dict(content.zone),
        "areas": areas,
        "npcs": npcs,
        "players": {},
        "environment": environment,
        "respawns": [],
        "clock": {"tick": 0, "spawned": 0},
        "content_version": content.fingerprint,  # the content it was made from (kb/world/migrate.py)
        "placed": sorted(i["instance_id"] for i in content.instances),  # content instances it has placed
    }


def place_instances(content: Content, areas: dict[str, Any], instances: list[dict[str, Any]]) -> None:
    """Put content instances where the content says: on their spot, or in the `contents` of the item they are inside."""
    for inst in instances:
        if "area_id" in inst and inst["spot_id"] in areas.get(inst["area_id"], {}).get("spots", {}):
            item = content.make_item(inst["instance_id"], inst["template_id"], inst.get("state"))
            areas[inst["area_id"]]["spots"][inst["spot_id"]]["items"].append(item)
    for inst in instances:
        holder = next((i for area in areas.values() for _, i in iter_area_items(area)
                       if i["instance_id"] == inst.get("inside")), None)
        if holder is not None:
            item = content.make_item(inst["instance_id"], inst["template_id"], inst.get("state"))
            holder["state"]["contents"] = [*holder["state"].get("contents", []), item]


def player_state(world: World, content: Content, user_id: str) -> dict[str, Any]:
    """A player's position and inventory; a newcomer stands at the start with empty hands."""
    found = world["players"].get(user_id)
    if found is not None:
        return found
    return {"current_location": content.zone["id"], "current_area": content.start_area, "inventory": []}


def hidden_spots(area: dict[str, Any]) -> dict[str, Any]:
    """An area's spots as a player elsewhere knows them under `location` visibility: no items."""
    return {spot_id: {**spot, "items": []} for spot_id, spot in area["spots"].items()}


def visible_areas(world: World, content: Content, here: str) -> dict[str, Any]:
    """Every area; under `location` visibility the items only of the one the player stands in.

    The deltas agree: changes in an area reach only the players present in it, and a step into
    another area brings that area's spots to the player (and empties the one it left).
    """
    if content.visibility != "location":
        return world["areas"]
    return {area_id: area if area_id == here else {**area, "spots": hidden_spots(area)}
            for area_id, area in world["areas"].items()}


def area_of_interest(world: World, content: Content, user_id: str,
                     players: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """What one player may know of the world right now (the `area_of_interest` frame body)."""
    player = player_state(world, content, user_id)
    return {
        "type": "area_of_interest",
        "snapshot_version": world["version"],
        "zone": world["zone"],
        "areas": visible_areas(world, content, player["current_area"]),
        "player": player,
        "npcs": world["npcs"],
        "environment": world["environment"],
        "players": players if players is not None else [
            {"user_id": user_id, "area_id": player_state(world, content, user_id)["current_area"]}],
    }


def iter_area_items(area: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(spot_id, item) for every item lying in an area."""
    for spot_id, spot in area["spots"].items():
        for item in spot["items"]:
            yield spot_id, item


def matches(item: dict[str, Any], wanted: str) -> bool:
    """True if `wanted` names this item by instance id, template id or name."""
    norm = wanted.strip().lower().replace("_", " ")
    return wanted == item["instance_id"] or norm in (
        item["semantic_name"].lower(), item["template_id"].replace("_", " ").lower())


def find_in_area(area: dict[str, Any], wanted: str) -> tuple[str, dict[str, Any]] | None:
    """The first (spot_id, item) in the area that `wanted` names, exact ids first."""
    items = list(iter_area_items(area))
    exact = next(((s, i) for s, i in items if i["instance_id"] == wanted), None)
    return exact or next(((s, i) for s, i in items if matches(i, wanted)), None)


def find_in_inventory(player: dict[str, Any], wanted: str) -> dict[str, Any] | None:
    """The first item in the inventory that `wanted` names, exact ids first."""
    inv = player["inventory"]
    return next((i for i in inv if i["instance_id"] == wanted), None) or next(
        (i for i in inv if matches(i, wanted)), None)


def edit(world: World, *keys: str) -> World:
    """A new world sharing untouched parts with the old; the named top-level parts are deep-copied."""
    new = dict(world)
    for key in keys:
        new[key] = copy.deepcopy(world[key])
    if "players" in keys:
        new[TOUCHED] = None  # every player copied: the commit compares them all
    return new


def edit_player(world: World, content: Content, user_id: str) -> tuple[World, dict[str, Any]]:
    """A new world whose `players` map holds a private, editable copy of one player."""
    new = dict(world)
    new["players"] = dict(world["players"])
    if TOUCHED not in world or world[TOUCHED] is not None:
        new[TOUCHED] = world.get(TOUCHED, frozenset()) | {user_id}
    player = copy.deepcopy(player_state(world, content, user_id))
    new["players"][user_id] = player
    return new, player
