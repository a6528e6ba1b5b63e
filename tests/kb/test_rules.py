"""Pure rules: each action's success, failure (nothing changes) and the deltas it reports."""
from __future__ import annotations

import pytest

from harness.client.world import apply_change, normalise
from kb.world import autonomy
from kb.world.content import load_content
from kb.world.model import area_of_interest, initial_world
from kb.world.rules import apply_action

CONTENT = load_content("wylding-woods")
NOW = 1_000_000


def act(world, user, **args):
    return apply_action(CONTENT, world, user, args, NOW)


def walk_to_main_room(world, user="p1"):
    return act(world, user, action="go", destination="main_room").world


def test_collect_moves_item_into_inventory_and_reports_both_deltas() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    out = act(world, "p1", action="collect_item", instance_id="dream_bottle_1")
    assert out.success and out.message == "You take the dream bottle."
    assert [c.change["operation"] for c in out.changes] == ["remove", "add"]
    assert out.changes[1].private_to == "p1"
    assert [i["instance_id"] for i in out.world["players"]["p1"]["inventory"]] == ["dream_bottle_1"]
    assert out.world["areas"]["main_room"]["spots"]["shelf_1"]["items"] == []
    assert world["areas"]["main_room"]["spots"]["shelf_1"]["items"], "the old world must stay untouched"


def test_collect_by_name_finds_the_item_in_the_area() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    out = act(world, "p1", action="collect_item", instance_id="Dream Bottle")
    assert out.success and out.changes[0].change["instance_id"] in ("dream_bottle_1", "dream_bottle_2")


def test_failed_collect_changes_nothing_and_says_why() -> None:
    world = initial_world(CONTENT)
    out = act(world, "p1", action="collect_item", instance_id="dream bottle")
    assert not out.success and out.world is None and out.changes == ()
    assert out.message == "There is no dream bottle here."


def test_second_collect_of_the_same_item_fails() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    world = walk_to_main_room(world, "p2")
    assert not act(world, "p2", action="collect_item", instance_id="dream_bottle_1").success


def test_drop_puts_item_on_a_spot_of_the_current_area() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    out = act(world, "p1", action="drop_item", instance_id="dream_bottle_1", destination="display_table")
    assert out.success
    assert any(i["instance_id"] == "dream_bottle_1" for i in out.world["areas"]["main_room"]["spots"]["display_table"]["items"])
    assert out.world["players"]["p1"]["inventory"] == []
    assert not act(out.world, "p1", action="drop_item", instance_id="dream_bottle_1").success


@pytest.mark.parametrize("destination, ok", [("main_room", True), ("Main Room", True), ("counter", False),
                                              ("entrance", False), ("narnia", False)])
def test_go_only_through_exits(destination: str, ok: bool) -> None:
    out = act(initial_world(CONTENT), "p1", action="go", destination=destination)
    assert out.success is ok
    if ok:
        assert out.world["players"]["p1"]["current_area"] == "main_room"


def test_examine_describes_area_items_and_npcs_without_changing_anything() -> None:
    world = act(walk_to_main_room(initial_world(CONTENT)), "p1", action="go", destination="counter").world
    look = act(world, "p1", action="examine")
    assert look.success and "Louisa" in look.message and "moon key" in look.message and look.world is None
    assert "silver key" in act(world, "p1", action="examine", instance_id="moon key").message
    assert "dream-keeper" in act(world, "p1", action="examine", npc_id="louisa").message
    assert not act(world, "p1", action="examine", instance_id="dragon").success


def test_inventory_lists_items() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    assert act(world, "p1", action="inventory").message == "You are carrying nothing."
    world = act(world, "p1", action="collect_item", instance_id="feather quill").world
    assert "feather quill" in act(world, "p1", action="inventory").message


def test_talk_answers_from_dialogue_templates() -> None:
    world = act(walk_to_main_room(initial_world(CONTENT)), "p1", action="go", destination="counter").world
    assert "Welcome to Woander's" in act(world, "p1", action="talk", npc_id="louisa").message
    assert "forgot" in act(world, "p1", action="talk", npc_id="Louisa", message="what is a bottle?").message
    assert not act(initial_world(CONTENT), "p1", action="talk", npc_id="louisa").success


def test_give_item_to_npc_who_wants_it() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    world = act(world, "p1", action="collect_item", instance_id="feather quill").world
    world = act(world, "p1", action="go", destination="counter").world
    assert not act(world, "p1", action="give_item", instance_id="feather quill", npc_id="louisa").success
    out = act(world, "p1", action="give_item", instance_id="dream_bottle_1", npc_id="louisa")
    assert out.success and "Thank you" in out.message
    assert [i["instance_id"] for i in out.world["players"]["p1"]["inventory"]] == ["feather_quill_1"]


def test_give_item_to_another_player_in_the_same_area() -> None:
    world = walk_to_main_room(walk_to_main_room(initial_world(CONTENT)), "p2")
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    out = act(world, "p1", action="give_item", instance_id="dream_bottle_1", target_user_id="p2")
    assert out.success
    assert out.world["players"]["p2"]["inventory"][0]["instance_id"] == "dream_bottle_1"
    assert {c.private_to for c in out.changes} == {"p1", "p2"}
    assert not act(world, "p1", action="give_item", instance_id="dream_bottle_1", target_user_id="ghost").success


def test_use_item_changes_state_once_or_consumes() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    out = act(world, "p1", action="use_item", instance_id="dream_bottle_1")
    assert out.success and out.world["players"]["p1"]["inventory"][0]["state"] == {"opened": True}
    again = act(out.world, "p1", action="use_item", instance_id="dream_bottle_1")
    assert again.success and again.world is None
    quill = act(out.world, "p1", action="collect_item", instance_id="feather quill").world
    assert not act(quill, "p1", action="use_item", instance_id="feather quill").success


def test_deltas_replayed_on_a_snapshot_reproduce_the_new_snapshot() -> None:
    world = initial_world(CONTENT)
    view = area_of_interest(world, CONTENT, "p1")
    for args in ({"action": "go", "destination": "main_room"},
                 {"action": "collect_item", "instance_id": "dream_bottle_1"},
                 {"action": "use_item", "instance_id": "dream_bottle_1"},
                 {"action": "drop_item", "instance_id": "dream_bottle_1", "destination": "shelf_2"}):
        out = apply_action(CONTENT, world, "p1", args, NOW)
        for scoped in out.changes:
            apply_change(view, scoped.change)
        world = out.world
    expected = area_of_interest(world, CONTENT, "p1")
    assert normalise(view) == normalise({**expected, "snapshot_version": view["snapshot_version"]})


def test_clock_tick_moves_npcs_changes_environment_and_respawns() -> None:
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "p1", action="collect_item", instance_id="dream_bottle_1").world
    assert world["respawns"] and world["respawns"][0]["spot_id"] == "shelf_1"
    out = autonomy.tick(CONTENT, world, NOW + 10_000_000)
    paths = [c.change.get("path") for c in out.changes]
    assert "npcs.louisa.area_id" in paths and "environment.time_of_day" not in paths  # tick 1
    assert any(c.change["operation"] == "add" and c.change["spot_id"] == "shelf_1" for c in out.changes)
    assert out.world["respawns"] == []
    out2 = autonomy.tick(CONTENT, out.world, NOW + 10_000_000)
    assert "environment.time_of_day" in [c.change.get("path") for c in out2.changes]


@pytest.mark.parametrize("visibility, bob_area, bob_sees", [
    ("global", "counter", True), ("location", "main_room", True), ("location", "counter", False),
    ("none", "main_room", False)])
def test_visibility_decides_who_sees_a_public_change(visibility: str, bob_area: str, bob_sees: bool) -> None:
    import orjson

    from kb.events import world_update_events
    world = walk_to_main_room(initial_world(CONTENT))
    world = act(world, "bob", action="go", destination="main_room").world
    if bob_area == "counter":
        world = act(world, "bob", action="go", destination="counter").world
    out = act(world, "p1", action="collect_item", instance_id="dream_bottle_1")
    from gateway.streams.audience import personal_copy
    events = world_update_events(out, experience="wylding-woods", actor_id="p1", visibility=visibility,
                                 base_version=5, now_ms=NOW, trace_id="t",
                                 whereabouts={"p1": "main_room", "bob": bob_area})
    assert len(events) == 1, "one broadcast per commit"
    broadcast = orjson.loads(events[0][2])
    by_user = {user: personal_copy(broadcast, user) for user in ("p1", "bob")}
    assert [c["operation"] for c in by_user["p1"]["changes"]] == ["remove", "add"]
    assert bool(by_user["bob"]["changes"]) is bob_sees
    assert by_user["bob"]["snapshot_version"] == 6, "everyone still gets the version step"
    assert all(c.get("path") != "player.inventory" for c in by_user["bob"]["changes"])


def test_location_visibility_snapshot_and_deltas_agree_for_a_player_who_just_joined() -> None:
    import dataclasses

    import orjson

    from kb.events import world_update_events
    local = dataclasses.replace(CONTENT, visibility="location")
    world = walk_to_main_room(initial_world(local), "old")  # "old" acted; "newbie" just joined, never acted
    newbie = area_of_interest(world, local, "newbie")
    assert newbie["areas"]["entrance"]["spots"]["umbrella_stand"]["items"], "its own area in full"
    assert all(not s["items"] for s in newbie["areas"]["main_room"]["spots"].values()), "no items elsewhere"

    # A change in the entrance reaches the newbie, who stands there without ever having acted.
    step = act(world, "walker", action="collect_item", instance_id="umbrella_1")
    [event] = world_update_events(step, experience="w", actor_id="walker", visibility="location", base_version=1,
                                  now_ms=NOW, trace_id="t", whereabouts={"newbie": "entrance", "old": "main_room"})
    body = orjson.loads(event[2])
    assert body["audience"][0] == {"only": ["newbie", "walker"]}, "the one in the main room does not see it"

    # Walking in brings the new area's items and forgets the old one's: deltas rebuild the snapshot.
    view = orjson.loads(orjson.dumps(area_of_interest(world, local, "newbie")))  # as the client has it
    walked = apply_action(local, world, "newbie", {"action": "go", "destination": "main_room"}, NOW)
    for change in walked.changes:
        apply_change(view, change.change)
    fresh = area_of_interest(walked.world, local, "newbie")
    assert normalise(view)["areas"] == normalise(fresh)["areas"] and view["player"] == fresh["player"]


def test_a_commit_writes_only_the_players_the_rules_touched_not_everyone_ever() -> None:
    from kb.stores.base import WorldDelta, meta_of
    world = initial_world(CONTENT)
    world["players"] = {f"ever{i}": {"current_location": "z", "current_area": "entrance", "inventory": []}
                        for i in range(1000)}
    out = act(world, "walker", action="go", destination="main_room")
    delta = WorldDelta.between(world, out.world)
    assert set(delta.players) == {"walker"} and delta.areas == {} and "_touched" not in meta_of(out.world)
    given = act(out.world, "walker", action="collect_item", instance_id="dream_bottle_1")
    assert set(WorldDelta.between(world, given.world).players) == {"walker"}
