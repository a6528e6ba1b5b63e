"""Pure game rules: (content, world, player, action, now) -> Outcome. No I/O, no clock of their own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kb.world.changes import (
    INVENTORY,
    ScopedChange,
    inventory_add,
    inventory_remove,
    inventory_update,
    spot_add,
    spot_remove,
)
from kb.world.content import Content
from kb.world.model import World, edit, edit_player, find_in_area, find_in_inventory, hidden_spots, player_state

__all__ = ["INVENTORY", "Outcome", "ScopedChange", "fail", "apply_action", "RULES"]


@dataclass(frozen=True)
class Outcome:
    """The result of an action or a clock tick; `world` is the new state when anything changed."""

    success: bool
    message: str
    changes: tuple[ScopedChange, ...] = ()
    world: World | None = None


def fail(message: str) -> Outcome:
    """A refused action: nothing changes, the message says why."""
    return Outcome(False, message)


def _norm(text: str) -> str:
    return text.strip().lower().replace("_", " ")


ANYONE = "anyone"


def _npc_here(content: Content, world: World, area_id: str, wanted: str) -> dict[str, Any] | None:
    """The NPC in this area that `wanted` names by id or name (`anyone`: the first one here)."""
    for npc in world["npcs"].values():
        if npc["area_id"] == area_id and (_norm(wanted) in (_norm(npc["id"]), _norm(npc["name"])) or wanted == ANYONE):
            return npc
    return None


def collect_item(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Take an item from the player's current area into their inventory."""
    wanted = args["instance_id"]
    area_id = player_state(world, content, user_id)["current_area"]
    found = find_in_area(world["areas"][area_id], wanted)
    if found is None:
        return fail(f"There is no {_norm(wanted)} here.")
    spot_id, item = found
    new = edit(world, "areas", "respawns")
    spot = new["areas"][area_id]["spots"][spot_id]
    spot["items"] = [i for i in spot["items"] if i["instance_id"] != item["instance_id"]]
    new, player = edit_player(new, content, user_id)
    player["inventory"].append(item)
    _schedule_respawn(content, new, item, area_id, spot_id, now_ms)
    changes = (
        spot_remove(area_id, spot_id, item["instance_id"]),
        inventory_add(user_id, item),
    )
    return Outcome(True, f"You take the {item['semantic_name']}.", changes, new)


def _schedule_respawn(content: Content, world: World, item: dict[str, Any], area_id: str, spot_id: str,
                      now_ms: int) -> None:
    """Items placed by the content with respawn_s come back to their spot after a cooldown."""
    placed = content.instance(item["instance_id"])
    if not placed or not placed.get("respawn_s") or placed["spot_id"] != spot_id:
        return
    if any(r["spot_id"] == spot_id and r["area_id"] == area_id for r in world["respawns"]):
        return
    world["respawns"].append({"template_id": item["template_id"], "area_id": area_id, "spot_id": spot_id,
                              "due_ms": now_ms + int(placed["respawn_s"] * 1000)})


def drop_item(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Put an inventory item down on a spot of the current area (the first, or the one named)."""
    player = player_state(world, content, user_id)
    item = find_in_inventory(player, args["instance_id"])
    if item is None:
        return fail(f"You are not carrying any {_norm(args['instance_id'])}.")
    area_id = player["current_area"]
    spots = world["areas"][area_id]["spots"]
    spot_id = args.get("destination") if args.get("destination") in spots else next(iter(spots), None)
    if spot_id is None:
        return fail("There is nowhere to put it down here.")
    new = edit(world, "areas")
    new["areas"][area_id]["spots"][spot_id]["items"].append(item)
    new, editable = edit_player(new, content, user_id)
    editable["inventory"] = [i for i in editable["inventory"] if i["instance_id"] != item["instance_id"]]
    changes = (
        inventory_remove(user_id, item["instance_id"]),
        spot_add(area_id, spot_id, item),
    )
    spot_name = world["areas"][area_id]["spots"][spot_id]["name"]
    return Outcome(True, f"You put the {item['semantic_name']} on the {spot_name}.", changes, new)


def go(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Walk to a neighbouring area, named by id or name."""
    here = player_state(world, content, user_id)["current_area"]
    wanted = _norm(args["destination"])
    target = next((a for a in world["areas"].values() if wanted in (_norm(a["id"]), _norm(a["name"]))), None)
    if target is None:
        return fail(f"There is no place called {wanted} here.")
    if target["id"] == here:
        return fail(f"You are already in the {target['name']}.")
    if target["id"] not in world["areas"][here]["exits"]:
        return fail(f"You can't get to the {target['name']} from here.")
    new, player = edit_player(world, content, user_id)
    player["current_area"] = target["id"]
    change = {"operation": "update", "area_id": None, "path": "player.current_area", "value": target["id"]}
    changes = [ScopedChange(change, private_to=user_id)]
    if content.visibility == "location":  # what is lying around is known only where one stands
        changes += [ScopedChange({"operation": "update", "area_id": None, "path": f"areas.{here}.spots",
                                  "value": hidden_spots(world["areas"][here])}, private_to=user_id),
                    ScopedChange({"operation": "update", "area_id": None, "path": f"areas.{target['id']}.spots",
                                  "value": target["spots"]}, private_to=user_id)]
    return Outcome(True, f"You go to the {target['name']}. {target['description']}", tuple(changes), new)


def examine(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Describe an item, an NPC, or (with nothing named) the area around the player."""
    player = player_state(world, content, user_id)
    area = world["areas"][player["current_area"]]
    wanted = args.get("instance_id") or args.get("npc_id")
    if not wanted:
        return Outcome(True, _describe_area(world, area))
    found = find_in_area(area, wanted)
    item = found[1] if found else find_in_inventory(player, wanted)
    if item is not None:
        return Outcome(True, f"{item['semantic_name'].capitalize()}: {item['description']}")
    npc = _npc_here(content, world, area["id"], wanted)
    if npc is not None:
        return Outcome(True, f"{npc['name']}: {npc['description']}")
    return fail(f"You see no {_norm(wanted)} here.")


def _describe_area(world: World, area: dict[str, Any]) -> str:
    """The room, what lies in it, who is in it and the ways out."""
    parts = [f"{area['name']}. {area['description']}"]
    for spot in area["spots"].values():
        if spot["items"]:
            names = ", ".join(i["semantic_name"] for i in spot["items"])
            parts.append(f"On the {spot['name']}: {names}.")
    npcs = [n["name"] for n in world["npcs"].values() if n["area_id"] == area["id"]]
    if npcs:
        parts.append(f"Here: {', '.join(npcs)}.")
    exits = ", ".join(world["areas"][e]["name"] for e in area["exits"])
    parts.append(f"Exits: {exits}.")
    return " ".join(parts)


def inventory(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """List what the player carries."""
    items = player_state(world, content, user_id)["inventory"]
    if not items:
        return Outcome(True, "You are carrying nothing.")
    return Outcome(True, "You are carrying: " + ", ".join(i["semantic_name"] for i in items) + ".")


def give_item(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Give an inventory item to an NPC who wants it, or to another player in the same area."""
    player = player_state(world, content, user_id)
    item = find_in_inventory(player, args["instance_id"])
    if item is None:
        return fail(f"You are not carrying any {_norm(args['instance_id'])}.")
    if args.get("target_user_id"):
        return _give_to_player(content, world, user_id, player, item, args["target_user_id"])
    if not args.get("npc_id"):
        return fail("Give it to whom? Name an npc_id or a target_user_id.")
    npc = _npc_here(content, world, player["current_area"], args["npc_id"])
    if npc is None:
        return fail(f"There is no {_norm(args['npc_id'])} here.")
    dialogue = content.npcs[npc["id"]]["dialogue"]
    if content.npcs[npc["id"]].get("wants") != item["template_id"]:
        return fail(dialogue["decline"])
    new, editable = edit_player(world, content, user_id)
    editable["inventory"] = [i for i in editable["inventory"] if i["instance_id"] != item["instance_id"]]
    return Outcome(True, dialogue["thanks"], (inventory_remove(user_id, item["instance_id"]),), new)


def _give_to_player(content: Content, world: World, user_id: str, player: dict[str, Any], item: dict[str, Any],
                    target_id: str) -> Outcome:
    """Hand an item to another player standing in the same area."""
    target = world["players"].get(target_id)
    if target_id == user_id or target is None or target["current_area"] != player["current_area"]:
        return fail(f"There is nobody called {target_id} here.")
    new, giver = edit_player(world, content, user_id)
    giver["inventory"] = [i for i in giver["inventory"] if i["instance_id"] != item["instance_id"]]
    new, receiver = edit_player(new, content, target_id)
    receiver["inventory"].append(item)
    changes = (inventory_remove(user_id, item["instance_id"]), inventory_add(target_id, item))
    return Outcome(True, f"You give the {item['semantic_name']} to {target_id}.", changes, new)


def talk(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Talk to an NPC in the area; the answer comes from the NPC's dialogue templates."""
    area_id = player_state(world, content, user_id)["current_area"]
    npc = _npc_here(content, world, area_id, args["npc_id"])
    if npc is None and args["npc_id"] == ANYONE:
        return Outcome(True, "Nobody here answers, but the bottles on the shelves seem to listen.")
    if npc is None:
        return fail(f"There is no {_norm(args['npc_id'])} here to talk to.")
    dialogue = content.npcs[npc["id"]]["dialogue"]
    said = (args.get("message") or "").lower()
    if not said.strip():
        return Outcome(True, dialogue["greeting"])
    topic = next((reply for key, reply in dialogue.get("topics", {}).items() if key in said), None)
    return Outcome(True, f"{npc['name']} says: {topic}" if topic else dialogue["default"])


def use_item(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Use an inventory item: its template says what happens (a state change, or it is used up)."""
    player = player_state(world, content, user_id)
    item = find_in_inventory(player, args["instance_id"])
    if item is None:
        return fail(f"You are not carrying any {_norm(args['instance_id'])}.")
    use = content.templates[item["template_id"]].get("use")
    if not use:
        return fail(f"Nothing happens when you use the {item['semantic_name']}.")
    if use.get("consumes"):
        new, editable = edit_player(world, content, user_id)
        editable["inventory"] = [i for i in editable["inventory"] if i["instance_id"] != item["instance_id"]]
        return Outcome(True, use["message"], (inventory_remove(user_id, item["instance_id"]),), new)
    new_state = {**item["state"], **use.get("state", {})}
    if new_state == item["state"]:
        return Outcome(True, f"You have already used the {item['semantic_name']}.")
    new, editable = edit_player(world, content, user_id)
    updated = {**item, "state": new_state}
    editable["inventory"] = [updated if i["instance_id"] == item["instance_id"] else i for i in editable["inventory"]]
    return Outcome(True, use["message"], (inventory_update(user_id, updated),), new)


Rule = Callable[[Content, World, str, dict[str, Any], int], Outcome]
RULES: dict[str, Rule] = {
    "collect_item": collect_item,
    "drop_item": drop_item,
    "go": go,
    "examine": examine,
    "inventory": inventory,
    "give_item": give_item,
    "talk": talk,
    "use_item": use_item,
}


def apply_action(content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
    """Dispatch an action to its rule; the caller has validated args against the schema."""
    rule = RULES.get(args["action"])
    if rule is None:
        return fail(f"Unknown action {args['action']!r}.")
    return rule(content, world, user_id, args, now_ms)

