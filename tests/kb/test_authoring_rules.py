"""Added actions as kb decides them (the example's open, close, craft), their guard, and content migrations."""
from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

import examples
from harness.client.world import apply_change, normalise
from kb.actions import FAILED, AddedActions
from kb.events import world_update_events
from kb.world.changes import ScopedChange
from kb.world.content import Content, load_content
from kb.world.migrate import adopt, adopt_player
from kb.world.model import area_of_interest, initial_world
from kb.world.rules import Outcome

NOW = 1_000_000
ADDED = AddedActions.load(examples.ACTION_MODULES)
CELLAR = load_content("tinkers-cellar", examples.WORLDS, ADDED.checks)
WOODS = load_content("wylding-woods")


def act(world: dict[str, Any], user: str = "ann", content: Content = CELLAR, added: AddedActions = ADDED,
        **args: Any) -> Outcome:
    return added.decide(content, world, user, args, NOW)


def in_storeroom(user: str = "ann") -> dict[str, Any]:
    world = initial_world(CELLAR)
    for area in ("workshop", "storeroom"):
        world = act(world, user, action="go", destination=area).world
    return world


def test_authoring_open_lays_out_what_the_chest_holds_and_says_so() -> None:
    world = in_storeroom()
    out = act(world, action="open", instance_id="iron chest")
    assert out.success and out.message == "You open the iron chest. Inside: a brass gear, a coiled spring."
    ops = [(c.change["operation"], c.change["instance_id"]) for c in out.changes]
    assert ops == [("update", "iron_chest_1"), ("add", "brass_gear_1"), ("add", "coiled_spring_1")]
    assert all(c.areas == ("storeroom",) and c.private_to is None for c in out.changes)
    floor = out.world["areas"]["storeroom"]["spots"]["floor"]["items"]
    assert [i["instance_id"] for i in floor] == ["iron_chest_1", "brass_gear_1", "coiled_spring_1"]
    assert floor[0]["state"] == {"open": True, "contents": []}
    assert world["areas"]["storeroom"]["spots"]["floor"]["items"][0]["state"]["open"] is False, "old world untouched"
    again = act(out.world, action="open", instance_id="iron_chest_1")
    assert not again.success and again.world is None and again.message == "The iron chest is already open."


@pytest.mark.parametrize("args,message", [
    ({"action": "open", "instance_id": "lantern"}, "There is no lantern here."),
    ({"action": "close", "instance_id": "iron chest"}, "The iron chest is already closed."),
    ({"action": "craft", "instance_id": "brass gear", "with_id": "coiled spring"},
     "You are not carrying any brass gear."),
])
def test_authoring_refused_added_actions_change_nothing_and_say_why(args: dict[str, Any], message: str) -> None:
    out = act(in_storeroom(), **args)
    assert (out.success, out.message, out.changes, out.world) == (False, message, (), None)


def test_authoring_close_puts_the_loose_things_back_and_craft_makes_one_of_two() -> None:
    world = act(in_storeroom(), action="open", instance_id="iron chest").world
    world = act(world, action="collect_item", instance_id="brass gear").world
    closed = act(world, action="close", instance_id="iron chest")
    assert closed.success and closed.message == "You close the iron chest; the coiled spring go back in."
    assert [c.change["operation"] for c in closed.changes] == ["remove", "update"]
    assert [i["instance_id"] for i in closed.world["areas"]["storeroom"]["spots"]["floor"]["items"]] == ["iron_chest_1"]
    world = act(act(closed.world, action="open", instance_id="iron chest").world,
                action="collect_item", instance_id="coiled spring").world
    made = act(world, action="craft", instance_id="coiled spring", with_id="brass_gear_1")
    assert made.success and made.message.startswith("You fit the brass gear to the coiled spring")
    assert [(c.change["operation"], c.private_to) for c in made.changes] == [
        ("remove", "ann"), ("remove", "ann"), ("add", "ann")]
    assert [i["instance_id"] for i in made.world["players"]["ann"]["inventory"]] == ["clockwork_beetle_c1"]
    world = made.world
    for area in ("workshop",):
        world = act(world, action="go", destination=area).world
    given = act(world, action="give_item", instance_id="clockwork beetle", npc_id="pip")  # a built-in, as ever
    assert given.success and "A friend for my rounds" in given.message


def test_authoring_an_added_actions_deltas_replayed_on_a_snapshot_reproduce_the_next_snapshot() -> None:
    world = in_storeroom()
    for args in ({"action": "open", "instance_id": "iron chest"},
                 {"action": "collect_item", "instance_id": "brass gear"},
                 {"action": "close", "instance_id": "iron chest"}):
        before = area_of_interest(world, CELLAR, "ann")
        out = act(world, **args)
        for scoped in out.changes:
            if scoped.private_to in (None, "ann"):
                apply_change(before, scoped.change)
        world = out.world
        assert normalise(before) == normalise({**area_of_interest(world, CELLAR, "ann"),
                                               "snapshot_version": before["snapshot_version"]}), args


def test_authoring_an_added_actions_event_follows_the_experiences_visibility() -> None:
    world = in_storeroom()
    world = act(world, "bob", action="go", destination="workshop").world  # bob is elsewhere
    out = act(world, action="open", instance_id="iron chest")
    [event] = world_update_events(Outcome(out.success, out.message, out.changes, {**out.world, "version": 1}),
                                  experience="tinkers-cellar", actor_id="ann", visibility=CELLAR.visibility,
                                  base_version=0, now_ms=NOW, trace_id="t",
                                  whereabouts={"ann": "storeroom", "bob": "workshop"})
    import orjson
    audience = orjson.loads(event[2])["audience"]
    assert audience == [{"only": ["ann"]}] * 3, "under location visibility only those in the storeroom see it"


def test_authoring_an_action_an_experience_does_not_offer_is_refused_there() -> None:
    world = initial_world(WOODS)
    out = act(world, content=WOODS, action="open", instance_id="dream bottle")
    assert not out.success and out.message == "Nobody can open here."


class Broken:
    """Rules a game could get wrong, each refused by the guard."""

    @staticmethod
    def raises(content: Content, world: dict, user: str, args: dict, now: int) -> Outcome:
        raise KeyError("chest")

    @staticmethod
    def in_place(content: Content, world: dict, user: str, args: dict, now: int) -> Outcome:
        world["environment"]["steam"] = "gone"
        return Outcome(True, "done", (), world)

    @staticmethod
    def not_an_outcome(content: Content, world: dict, user: str, args: dict, now: int) -> Any:
        return {"success": True}

    @staticmethod
    def bad_change(content: Content, world: dict, user: str, args: dict, now: int) -> Outcome:
        return Outcome(True, "done", (ScopedChange({"operation": "explode"}),), dict(world))


@pytest.mark.parametrize("rule", ["raises", "in_place", "not_an_outcome", "bad_change"])
def test_authoring_a_games_broken_rule_refuses_its_action_and_logs_why(rule: str, caplog) -> None:
    caplog.set_level(logging.ERROR)
    added = AddedActions({**ADDED.rules, "open": getattr(Broken, rule)}, ADDED.checks)
    world = copy.deepcopy(in_storeroom())
    out = act(world, added=added, action="open", instance_id="iron chest")
    assert (out.success, out.message, out.world) == (False, FAILED, None)
    assert any("added action open (examples.tinkers.actions)" in r.getMessage() for r in caplog.records)


def test_authoring_migration_removed_templates_areas_and_npcs_go_players_move_to_the_start() -> None:
    world = initial_world(WOODS)
    for area in ("main_room", "back_room"):
        world = act(world, "p1", content=WOODS, action="go", destination=area).world
    world = act(world, "p1", content=WOODS, action="collect_item", instance_id="dream bottle").world
    world = act(world, "p2", content=WOODS, action="go", destination="garden").world
    areas = {k: v for k, v in WOODS.areas.items() if k != "back_room"}
    areas = {k: {**v, "exits": [e for e in v["exits"] if e != "back_room"]} for k, v in areas.items()}
    new = Content(**{**WOODS.__dict__, "areas": areas, "fingerprint": "v2",
                     "templates": {k: v for k, v in WOODS.templates.items() if k != "dream_bottle"},
                     "instances": [i for i in WOODS.instances if i["template_id"] != "dream_bottle"]
                     + [{"instance_id": "lamp_1", "template_id": "umbrella", "area_id": "garden", "spot_id": "bench"}],
                     "npcs": {}, "environment": {"weather": ["fog", "clear"]}})
    migrated, notes = adopt(new, world)
    assert "back_room" not in migrated["areas"] and migrated["npcs"] == {}
    assert migrated["players"]["p1"]["current_area"] == "entrance" and migrated["players"]["p1"]["inventory"] == []
    assert migrated["players"]["p2"] is world["players"]["p2"], "an unchanged player keeps its object (no write)"
    bench = [i["instance_id"] for i in migrated["areas"]["garden"]["spots"]["bench"]["items"]]
    assert bench == ["lamp_1"], "the bottle went with its template; the new instance is placed"
    assert migrated["environment"] == {"weather": "clear"} and migrated["content_version"] == "v2"
    assert "lamp_1" in migrated["placed"] and migrated["respawns"] == []
    assert notes == ["item gone with its template: dream_bottle_1, dream_bottle_2, dream_bottle_3, dream_bottle_4",
                     "area removed: back_room (with what lay in it)", "1 new item(s) placed: lamp_1",
                     "player moved to the start area: from back_room", "npc removed: louisa"]
    again, more = adopt(new, migrated)
    assert more == [] and normalise(area_of_interest(again, new, "p1")) == normalise(
        area_of_interest(migrated, new, "p1")), "a second adoption changes nothing"
    cold = adopt_player(new, world["players"]["p1"])  # a player kb loads later from the store
    assert cold["current_area"] == "entrance" and cold["inventory"] == []
