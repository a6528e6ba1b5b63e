"""kb.worldservice.WorldService: every change goes rules -> one store commit (state + outbox) -> publisher, in turn."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, Awaitable, Callable

import orjson
import pytest

from kb.outbox import OutboxPublisher
from kb.presence import PresenceBook
from kb.world.content import load_content
from kb.world.model import find_in_area
from kb.worldservice import TooManySessions, WorldService
from tests.helpers import EXPERIENCE, published_all

GO_MAIN = {"action": "go", "destination": "main_room"}
GRAB = {"action": "collect_item", "instance_id": "dream_bottle_1"}
MakeWorld = Callable[..., Awaitable[WorldService]]


@pytest.fixture
def make_world(outbox_parts: Any) -> MakeWorld:
    """make_world(**options) -> a loaded WorldService for wylding-woods on the shared store, as kb builds it."""
    settings, store, link = outbox_parts

    async def make(**options: Any) -> WorldService:
        presence = PresenceBook(grace_s=settings.presence_grace_s, stale_s=settings.presence_renew_s * 3)
        world = WorldService(load_content(EXPERIENCE), store, OutboxPublisher(store, link, settings), presence,
                             **options)
        await world.load()
        return world
    return make


async def outbox(store: Any) -> list[dict[str, Any]]:
    """Every unpublished outbox event, decoded, in commit order."""
    return [orjson.loads(row.payload) for row in await store.unpublished(1000)]


def steps(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(e["base_version"], e["snapshot_version"]) for e in events if e["type"] == "world_update"]


async def test_an_action_commits_once_steps_the_version_by_one_and_its_event_is_published(
        outbox_parts, make_world) -> None:
    settings, store, link = outbox_parts
    world = await make_world()
    result = await world.act("alice", GO_MAIN, "trace-1")
    assert result["success"] and result["snapshot_version"] == world.world["version"] == 1
    saved = await store.load_world(EXPERIENCE)
    assert saved["version"] == 1 and saved["players"]["alice"]["current_area"] == "main_room"
    [event] = await outbox(store)
    assert (event["type"], event["actor_id"], event["base_version"], event["snapshot_version"]) == (
        "world_update", "alice", 0, 1)
    publishing = asyncio.create_task(world.publisher.run())
    await published_all(store)
    publishing.cancel()
    await asyncio.gather(publishing, return_exceptions=True)
    assert (await link.js.stream_info(settings.stream_name)).state.messages == 1


async def test_state_and_outbox_rows_are_one_commit_so_a_failed_outbox_write_leaves_the_world_as_it_was(
        outbox_parts, make_world) -> None:
    settings, store, _ = outbox_parts
    world = await make_world()
    db = sqlite3.connect(settings.kb_db_path)  # another connection: the outbox refuses every row
    db.execute("CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'no'); END")
    with pytest.raises(sqlite3.Error):
        await world.act("alice", GO_MAIN)
    saved = await store.load_world(EXPERIENCE)
    assert (saved["version"], saved["players"], world.world["version"]) == (0, {}, 0), "no state without its event"
    assert await outbox(store) == []
    db.execute("DROP TRIGGER refuse_outbox")
    db.close()
    assert (await world.act("alice", GO_MAIN))["snapshot_version"] == 1, "the next commit follows on, no hole"
    assert steps(await outbox(store)) == [(0, 1)]


async def test_a_refused_action_changes_nothing_in_memory_store_or_outbox(outbox_parts, make_world) -> None:
    _, store, _ = outbox_parts
    world = await make_world()
    await world.act("bob", GO_MAIN)
    memory, saved, rows = world.world, await store.load_world(EXPERIENCE), await store.unpublished(1000)
    result = await world.act("bob", {"action": "collect_item", "instance_id": "moon_key_1"})  # on the counter
    assert not result["success"] and result["changes"] == [] and result["snapshot_version"] == 1
    assert world.world is memory
    assert await store.load_world(EXPERIENCE) == saved
    assert await store.unpublished(1000) == rows


async def test_concurrent_actions_are_serialised_one_winner_and_contiguous_versions(outbox_parts, make_world) -> None:
    _, store, _ = outbox_parts
    world = await make_world()
    users = [f"p{i}" for i in range(12)]
    moved = await asyncio.gather(*(world.act(u, GO_MAIN) for u in users))
    assert sorted(r["snapshot_version"] for r in moved) == list(range(1, 13))
    grabs = await asyncio.gather(*(world.act(u, GRAB) for u in users))
    winners = [u for u, r in zip(users, grabs, strict=True) if r["success"]]
    assert len(winners) == 1, grabs
    assert world.world["version"] == (await store.load_world(EXPERIENCE))["version"] == 13
    assert steps(await outbox(store)) == [(v, v + 1) for v in range(13)]
    saved = await store.load_world(EXPERIENCE)
    assert [i["instance_id"] for i in saved["players"][winners[0]]["inventory"]] == ["dream_bottle_1"]


async def test_a_version_conflict_reloads_the_world_and_decides_again_on_top_of_the_other_writer(
        outbox_parts, make_world) -> None:
    _, store, _ = outbox_parts
    ours, theirs = await make_world(), await make_world()  # two writers of one store (a paused former owner)
    await theirs.act("alice", GO_MAIN)
    await theirs.act("alice", GRAB)
    assert ours.world["version"] == 0
    result = await ours.act("carol", GO_MAIN)
    assert result["success"] and result["snapshot_version"] == 3, "committed after theirs, not over it"
    assert find_in_area(ours.world["areas"]["main_room"], "dream_bottle_1") is None
    assert [i["instance_id"] for i in ours.world["players"]["alice"]["inventory"]] == ["dream_bottle_1"]
    assert not (await ours.act("carol", GRAB))["success"], "the bottle alice took is gone for us too"
    events = await outbox(store)
    assert steps(events) == [(0, 1), (1, 2), (2, 3)]
    assert [e["actor_id"] for e in events] == ["alice", "alice", "carol"]
    assert (await store.load_world(EXPERIENCE))["players"]["carol"]["current_area"] == "main_room"


async def test_take_over_reloads_what_another_writer_committed(make_world) -> None:
    ours, theirs = await make_world(), await make_world()
    await theirs.act("alice", GO_MAIN)
    await ours.take_over()
    assert ours.world["version"] == 1 and ours.area_of("alice") == "main_room"


async def test_a_user_may_open_at_most_limit_sessions_counted_over_every_gateway(make_world) -> None:
    world = await make_world()
    now = time.time()
    assert (await world.join_and_view("dora", "s1", "gw-a", now, limit=2))["type"] == "area_of_interest"
    await world.join_and_view("dora", "s2", "gw-b", now, limit=2)
    with pytest.raises(TooManySessions):
        await world.join_and_view("dora", "s3", "gw-a", now, limit=2)
    await world.join_and_view("dora", "s1", "gw-a", now, limit=2)  # a session announced again is no new one
    views = await world.join_and_view_many([{"user_id": "dora", "session_id": "s4", "gateway_id": "gw-a"},
                                            {"user_id": "eve", "session_id": "s5", "gateway_id": "gw-a"}], now, 2)
    assert views[0]["error"] == "too_many_sessions" and views[1]["type"] == "area_of_interest"
    assert world.presence.live_sessions(EXPERIENCE, "dora") == 2
    assert (await world.join_and_view("dora", "s6", "gw-a", now, limit=0))["type"] == "area_of_interest", "0: none"


async def test_joins_moves_and_leaves_are_announced_in_the_outbox_and_listed_in_snapshots(
        outbox_parts, make_world) -> None:
    _, store, _ = outbox_parts
    world = await make_world()
    now = time.time()
    await world.join_and_view("fay", "s1", "gw", now)
    view = await world.join_and_view("gus", "s2", "gw", now)
    assert view["players"] == [{"user_id": "fay", "area_id": "entrance"}, {"user_id": "gus", "area_id": "entrance"}]
    await world.act("fay", GO_MAIN)
    await world.announce(world.presence.leave("s1"))
    events = await outbox(store)
    assert [(e["type"], e.get("event"), e.get("user_id"), e.get("area_id")) for e in events] == [
        ("presence", "join", "fay", "entrance"), ("presence", "join", "gus", "entrance"),
        ("world_update", None, None, None), ("presence", "move", "fay", "main_room"),
        ("presence", "leave", "fay", "main_room")]
    assert world.world["version"] == 1, "presence is announced without stepping the world's version"
    assert world.view("gus")["players"] == [{"user_id": "gus", "area_id": "entrance"}]


async def test_with_announcements_off_nothing_is_announced_and_a_snapshot_lists_only_its_player(
        outbox_parts, make_world) -> None:
    _, store, _ = outbox_parts
    world = await make_world(announce_presence=False)
    await world.join_and_view("fay", "s1", "gw", time.time())
    view = await world.join_and_view("gus", "s2", "gw", time.time())
    await world.act("gus", GO_MAIN)
    assert view["players"] == [{"user_id": "gus", "area_id": "entrance"}]
    assert [e["type"] for e in await outbox(store)] == ["world_update"]


async def test_an_evicted_player_comes_back_from_the_store_when_acting_again(make_world) -> None:
    world = await make_world()
    await world.act("hal", GO_MAIN)
    assert await world.evict_cold(time.time() + world.players_hot_s + 1) == 1
    assert "hal" not in world.world["players"]
    assert (await world.act("hal", GRAB))["success"], "hal still stands in the main room"
