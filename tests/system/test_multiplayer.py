"""Several real players in one experience: presence, shared visibility, a living world, races."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from harness.client.world import normalise
from kb.app import create_app as create_kb
from kb.clock import ClockLease
from kb.keys import NATS as KB_NATS
from kb.keys import PRESENCE as KB_PRESENCE
from kb.keys import WORLDS as KB_WORLDS
from shared.natsconn import NatsLink
from tests.helpers import EXPERIENCE, eventually, outbox_drained


async def present(kb_server, *users: str) -> None:
    """The users are present and announced (a snapshot lists only players the others were told of)."""
    await eventually(lambda: set(users) <= kb_server.app[KB_PRESENCE].present_users(EXPERIENCE))
    for world in kb_server.app[KB_WORLDS].values():
        await world.announcer.flush()


async def kb_view(kb_http, kb_server, user: str) -> dict:
    async with kb_http.get(str(kb_server.make_url(f"/experiences/{EXPERIENCE}/players/{user}/state"))) as r:
        return await r.json()


async def next_where(client, frame_type: str, predicate, timeout: float = 10.0) -> dict:
    """The next frame of a type that matches, skipping others (e.g. presence of someone else)."""
    while True:
        frame = await client.next(frame_type, timeout=timeout)
        if predicate(frame):
            return frame


async def test_others_see_the_bottle_vanish_with_the_actor_named(players, kb_server) -> None:
    alice, bob, carol = await players("alice"), await players("bob"), await players("carol")
    await present(kb_server, "alice", "bob", "carol")
    await alice.act("go", destination="main_room")
    assert (await alice.act("collect_item", instance_id="dream_bottle_1"))["success"]
    for other in (bob, carol):
        update = await next_where(other, "world_update", lambda u: u["changes"] and u["changes"][0]["operation"] == "remove")
        assert update["actor_id"] == "alice" and update["user_id"] == other.connected["user_id"]
        assert update["changes"] == [{"operation": "remove", "area_id": "main_room", "spot_id": "shelf_1",
                                      "instance_id": "dream_bottle_1"}]  # not alice's inventory
    await eventually(lambda: bob.world.version == alice.world.version == carol.world.version)
    assert bob.world.view["areas"]["main_room"]["spots"]["shelf_1"]["items"] == []
    assert bob.world.gaps == carol.world.gaps == 0


async def test_presence_join_and_clean_leave(players, kb_server) -> None:
    alice = await players("alice")
    await present(kb_server, "alice")
    bob = await players("bob")
    join = await next_where(alice, "presence", lambda p: p["user_id"] == "bob")
    assert join["event"] == "join" and join["experience"] == EXPERIENCE and join["area_id"] == "entrance"
    assert "seq" in join
    await bob.close()  # 1000: leaves at once
    leave = await next_where(alice, "presence", lambda p: p["user_id"] == "bob", timeout=3)
    assert leave["event"] == "leave"


async def test_late_joiner_sees_who_is_where_and_then_sees_them_move(players, kb_server) -> None:
    alice = await players("alice")
    await present(kb_server, "alice")
    assert alice.connected and alice.roster == {"alice": "entrance"}
    bob = await players("bob")
    snapshot = bob.frames[1]
    assert snapshot["type"] == "area_of_interest"
    assert snapshot["players"] == [{"user_id": "alice", "area_id": "entrance"}, {"user_id": "bob", "area_id": "entrance"}]
    await alice.act("go", destination="main_room")
    move = await next_where(bob, "presence", lambda p: p["event"] == "move")
    assert move == {**move, "user_id": "alice", "area_id": "main_room", "experience": EXPERIENCE} and "seq" in move
    assert bob.roster == {"alice": "main_room", "bob": "entrance"}
    await next_where(alice, "presence", lambda p: p["user_id"] == "bob")
    assert not [p for p in alice.drain("presence") if p["user_id"] == "alice"], "no frame about one's own move"
    # One's own move comes as a delta, not presence: the roster (presence only) shows bob; her view shows her.
    assert alice.roster["bob"] == "entrance" and alice.world.view["player"]["current_area"] == "main_room"


async def test_a_join_storm_reaches_each_player_as_one_batch_per_window(players, kb_server) -> None:
    alice = await players("alice")
    await present(kb_server, "alice")
    crowd = await asyncio.gather(*(players(f"crowd{i}") for i in range(6)))
    await present(kb_server, *(f"crowd{i}" for i in range(6)))
    await eventually(lambda: len(alice.roster) == 7)
    batches = alice.drain("presence_batch")
    others = [c for b in batches for c in b["changes"] if c["user_id"] != "alice"]  # her own join may be in one
    assert 1 <= len(batches) <= 3 and len(others) == 6
    assert all(c["event"] == "join" and c["area_id"] == "entrance" for c in others)
    for client in crowd:
        await client.close()
    await eventually(lambda: alice.roster == {"alice": "entrance"})
    assert len(alice.drain("presence_batch")) <= 3


async def test_second_device_does_not_join_twice_and_leave_waits_for_the_last(players, kb_server) -> None:
    alice = await players("alice")
    await present(kb_server, "alice")
    phone, headset = await players("bob"), await players("bob")
    await next_where(alice, "presence", lambda p: p["user_id"] == "bob")
    await phone.close()
    await eventually(lambda: kb_server.app[KB_PRESENCE].live_sessions(EXPERIENCE, "bob") == 1)
    # kb has handled the phone's close; carol's join is announced after anything that close caused.
    await players("carol")
    seen = [await alice.next("presence")]
    while seen[-1]["user_id"] != "carol":
        seen.append(await alice.next("presence"))
    assert not [p for p in seen if p["user_id"] == "bob"], seen
    await headset.close()
    assert (await next_where(alice, "presence", lambda p: p["user_id"] == "bob"))["event"] == "leave"


async def test_dropped_phone_stays_present_for_the_grace_and_misses_nothing(players, kb_server, settings) -> None:
    alice, bob = await players("alice"), await players("bob")
    await present(kb_server, "alice", "bob")
    await outbox_drained(kb_server)  # the joins are announced before what bob is to miss
    await bob.act("go", destination="main_room")
    await next_where(bob, "world_update", lambda u: True)
    await bob.drop()  # no close frame
    assert (await alice.act("go", destination="main_room"))["success"]
    assert (await alice.act("collect_item", instance_id="dream_bottle_2"))["success"]
    assert "bob" in kb_server.app[KB_PRESENCE].present_users(EXPERIENCE)
    await outbox_drained(kb_server)
    before = len(bob.seqs)
    await bob.connect(last_seq=bob.last_seq)
    resumed = await bob.next("resumed")
    missed = bob.frames[-1 - resumed["replayed"]:-1]
    assert resumed["replayed"] == 3 and [f["type"] for f in missed] == ["world_update", "presence", "world_update"]
    assert [f.get("actor_id", f.get("user_id")) for f in missed] == ["alice", "alice", "alice"]
    assert missed[1]["event"] == "move" and missed[1]["area_id"] == "main_room"
    assert bob.seqs == sorted(set(bob.seqs)) and len(bob.seqs) == before + 3
    assert bob.world.view["areas"]["main_room"]["spots"]["shelf_2"]["items"] == []
    assert not bob.drain("area_of_interest"), "the chain reached the world's version: no snapshot needed"


async def test_dropped_phone_leaves_when_the_grace_ends(players, kb_server, settings) -> None:
    alice, bob = await players("alice"), await players("bob")
    await present(kb_server, "alice", "bob")
    alice.drain("presence")
    await bob.drop()
    await asyncio.sleep(settings.presence_grace_s / 2)
    assert not [p for p in alice.drain("presence") if p["event"] == "leave"]
    leave = await next_where(alice, "presence", lambda p: p["user_id"] == "bob", timeout=settings.presence_grace_s + 5)
    assert leave["event"] == "leave"


async def test_reconnect_after_the_grace_still_replays_everything_since_its_cursor(players, kb_server,
                                                                                 settings) -> None:
    alice, bob = await players("alice"), await players("bob")
    await present(kb_server, "alice", "bob")
    cursor = bob.last_seq or 0
    await bob.drop()
    await eventually(lambda: "bob" not in kb_server.app[KB_PRESENCE].present_users(EXPERIENCE),
                     timeout=settings.presence_grace_s + 5)
    assert (await alice.act("go", destination="main_room"))["success"]  # bob is gone from presence
    moved = await alice.next("world_update")
    await bob.connect(last_seq=cursor)
    replayed = await bob.next("world_update")
    assert (replayed["seq"], replayed["actor_id"], replayed["snapshot_version"]) == (
        moved["seq"], "alice", moved["snapshot_version"]), "changes are on the experience's subject: none missed"
    assert (await bob.next("resumed"))["replayed"] >= 1
    assert bob.world.version == alice.world.version


async def test_twenty_players_race_for_one_bottle_exactly_one_wins_and_all_converge(players, kb_server, kb_http) -> None:
    racers = [await players(f"racer{i}") for i in range(20)]
    await present(kb_server, *[f"racer{i}" for i in range(20)])
    await asyncio.gather(*(r.act("go", destination="main_room") for r in racers))
    answers = await asyncio.gather(*(r.act("collect_item", instance_id="dream_bottle_1") for r in racers))
    winners = [a for a in answers if a["success"]]
    assert len(winners) == 1
    assert all(a["message"] == "There is no dream bottle 1 here." for a in answers if not a["success"])
    final = (await kb_view(kb_http, kb_server, "racer0"))["snapshot_version"]
    await eventually(lambda: all(r.world.version == final for r in racers))
    for index, racer in enumerate(racers):
        assert racer.world.gaps == 0 and racer.world.snapshots == 1, "every delta applied in a gap-free chain"
        versions = [v for pair in racer.world.applied for v in pair]
        assert versions == sorted(versions)
        assert racer.world.comparable() == normalise(await kb_view(kb_http, kb_server, f"racer{index}"))


async def test_world_moves_on_its_own_while_nobody_acts(aiohttp_server, settings, token, gateway_settings) -> None:
    from gateway.app import create_app as create_gateway
    from gateway.keys import NATS as GW_NATS
    from harness.client.ws import GaiaClient
    kb = await aiohttp_server(create_kb(replace(settings, kb_clock_tick_s=0.3)))
    assert await kb.app[KB_NATS].wait_ready(10)
    gw = await aiohttp_server(create_gateway(replace(gateway_settings, kb_url=str(kb.make_url("")).rstrip("/")), "gw"))
    assert await gw.app[GW_NATS].wait_ready(10)
    async with GaiaClient(str(gw.make_url("")).rstrip("/"), token("idle"), EXPERIENCE) as idle:
        await idle.next("area_of_interest")
        update = await next_where(idle, "world_update",
                                  lambda u: any(c.get("path") == "npcs.louisa.area_id" for c in u["changes"]))
        assert update["actor_id"] == "world"
        env = await next_where(idle, "world_update",
                               lambda u: any(c.get("path", "").startswith("environment.") for c in u["changes"]))
        assert env["actor_id"] == "world" and idle.world.gaps == 0


async def test_only_one_process_holds_the_world_clock_lease(settings) -> None:
    links = [NatsLink(settings, f"kb{i}") for i in range(2)]
    for link in links:
        link.start()
        assert await link.wait_ready(10)
    first, second = ClockLease(links[0], ttl_s=1.0), ClockLease(links[1], ttl_s=1.0)
    assert await first.hold() is True
    assert await second.hold() is False
    assert await first.hold() is True  # renewal by the holder
    await asyncio.sleep(1.6)  # the holder stops renewing (crashed): its entry expires
    assert await second.hold() is True
    assert await first.hold() is False
    for link in links:
        await link.close()
