"""Tinker's Cellar's rules: pure, like the built-in ones (content, world, user_id, args, now_ms) -> Outcome.

Each copies what it changes (edit, edit_player) and reports every change with who may see it
(kb.world.changes); kb commits the new world and its event in one transaction, under the experience's
visibility, exactly as it does a built-in rule's. Game data lives in the templates' `properties`:
`container: true`, and `crafted_from: [two template ids]` with an optional `craft_message`.
"""
from __future__ import annotations

from typing import Any, Iterator

from kb.world.changes import ScopedChange, inventory_add, inventory_remove, spot_add, spot_remove, spot_update
from kb.world.content import Content
from kb.world.model import World, edit, edit_player, find_in_area, find_in_inventory, player_state
from kb.world.rules import Outcome, fail


def _name(text: str) -> str:
    return text.strip().lower().replace("_", " ")


def _container(content: Content, world: World, user_id: str, wanted: str) -> tuple[str, str, dict[str, Any]] | str:
    """(area, spot, item) of the container `wanted` names in the player's area, or why there is none."""
    area_id = player_state(world, content, user_id)["current_area"]
    found = find_in_area(world["areas"][area_id], wanted)
    if found is None:
        return f"There is no {_name(wanted)} here."
    spot_id, item = found
    if not content.properties(item["template_id"]).get("container"):
        return f"The {item['semantic_name']} does not open."
    return area_id, spot_id, item


def open_container(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Open a container: it is open, and what it held lies beside it on its spot (anyone there may take it)."""
    found = _container(content, world, user_id, args["instance_id"])
    if isinstance(found, str):
        return fail(found)
    area_id, spot_id, chest = found
    if chest["state"].get("open"):
        return fail(f"The {chest['semantic_name']} is already open.")
    inside = list(chest["state"].get("contents", []))
    opened = {**chest, "state": {**chest["state"], "open": True, "contents": []}}
    new = edit(world, "areas")
    spot = new["areas"][area_id]["spots"][spot_id]
    spot["items"] = [opened if i["instance_id"] == chest["instance_id"] else i for i in spot["items"]] + inside
    changes = (spot_update(area_id, spot_id, opened), *(spot_add(area_id, spot_id, item) for item in inside))
    held = ", ".join(f"a {i['semantic_name']}" for i in inside)
    return Outcome(True, f"You open the {chest['semantic_name']}. " + (f"Inside: {held}." if held else "It is empty."),
                   changes, new)


def close_container(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Close a container: the loose things on its spot (containers aside) go back inside it."""
    found = _container(content, world, user_id, args["instance_id"])
    if isinstance(found, str):
        return fail(found)
    area_id, spot_id, chest = found
    if not chest["state"].get("open"):
        return fail(f"The {chest['semantic_name']} is already closed.")
    lying = world["areas"][area_id]["spots"][spot_id]["items"]
    loose = [i for i in lying if i is not chest and not content.properties(i["template_id"]).get("container")]
    closed = {**chest, "state": {**chest["state"], "open": False,
                                 "contents": [*chest["state"].get("contents", []), *loose]}}
    new = edit(world, "areas")
    going = {i["instance_id"] for i in loose}
    new["areas"][area_id]["spots"][spot_id]["items"] = [closed if i["instance_id"] == chest["instance_id"] else i
                                                        for i in lying if i["instance_id"] not in going]
    changes = (*(spot_remove(area_id, spot_id, i["instance_id"]) for i in loose), spot_update(area_id, spot_id, closed))
    back = ", ".join(i["semantic_name"] for i in loose)
    return Outcome(True, f"You close the {chest['semantic_name']}" + (f"; the {back} go back in." if back else "."),
                   changes, new)


def craft(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Make one item of two the player carries, by a template whose `crafted_from` names their two templates."""
    player = player_state(world, content, user_id)
    first, second = find_in_inventory(player, args["instance_id"]), find_in_inventory(player, args["with_id"])
    missing = next((w for w, i in ((args["instance_id"], first), (args["with_id"], second)) if i is None), None)
    if missing is not None or first is None or second is None:
        return fail(f"You are not carrying any {_name(missing or '')}.")
    if first["instance_id"] == second["instance_id"]:
        return fail(f"You need two things to craft, not one {first['semantic_name']}.")
    made = recipe(content, first["template_id"], second["template_id"])
    if made is None:
        return fail(f"The {first['semantic_name']} and the {second['semantic_name']} make nothing together.")
    new = edit(world, "clock")
    new["clock"]["spawned"] = new["clock"].get("spawned", 0) + 1
    item = content.make_item(f"{made}_c{new['clock']['spawned']}", made)
    new, editable = edit_player(new, content, user_id)
    used = (first["instance_id"], second["instance_id"])
    editable["inventory"] = [i for i in editable["inventory"] if i["instance_id"] not in used] + [item]
    changes: tuple[ScopedChange, ...] = (*(inventory_remove(user_id, u) for u in used), inventory_add(user_id, item))
    said = content.properties(made).get("craft_message") or f"You make a {item['semantic_name']}."
    return Outcome(True, said, changes, new)


def recipe(content: Content, one: str, other: str) -> str | None:
    """The template made of these two templates (in either order), if any."""
    return next((tid for tid in content.templates
                 if sorted(content.properties(tid).get("crafted_from", [])) == sorted([one, other])), None)


def check_recipes(content: Content) -> Iterator[tuple[str, str, str]]:
    """The content's own data, as `gaia-kb check` reports it: containers are flags, recipes name two templates."""
    for tid, template in content.templates.items():
        where, props = f"$.templates.{tid}.properties", template.get("properties", {})
        if "container" in props and not isinstance(props["container"], bool):
            yield "items.json", f"{where}.container", "must be true or false"
        parts = props.get("crafted_from")
        if parts is None:
            continue
        if not isinstance(parts, list) or len(parts) != 2:
            yield "items.json", f"{where}.crafted_from", "a recipe names exactly two templates"
            continue
        for n, part in enumerate(parts):
            if part not in content.templates:
                yield "items.json", f"{where}.crafted_from[{n}]", f"unknown template {part!r}"
