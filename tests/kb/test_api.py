"""kb over HTTP with a real nats-server: actions commit, versions step by one, events reach NATS."""
from __future__ import annotations

import asyncio

import aiohttp
import nats
import orjson
import pytest

from gateway.streams.audience import personal_copy
from kb.keys import PRESENCE
from shared.schemas.events import BroadcastWorldUpdateSchema, WorldUpdateEventSchema
from tests.helpers import EXPERIENCE


def url(server, path: str) -> str:
    return str(server.make_url(path))


async def post_action(kb_http, kb_server, user: str, **args):
    async with kb_http.post(url(kb_server, f"/experiences/{EXPERIENCE}/actions"), json={"user_id": user, **args}) as r:
        return r.status, await r.json()


async def test_each_commit_publishes_one_broadcast_that_yields_valid_v04_copies(kb_server, kb_http,
                                                                                 nats_server) -> None:
    nc = await nats.connect(nats_server.url_as("operator"))  # a listener on the stored subject: tests only
    sub = await nc.subscribe("world.updates.>")
    await post_action(kb_http, kb_server, "alice", action="go", destination="main_room")
    status, body = await post_action(kb_http, kb_server, "alice", action="collect_item", instance_id="dream_bottle_1")
    assert status == 200 and body["success"] and body["snapshot_version"] == 2
    first, second = (await sub.next_msg(timeout=5)), (await sub.next_msg(timeout=5))
    assert first.subject == second.subject == "world.updates.exp.wylding-woods"
    broadcast = BroadcastWorldUpdateSchema().load(orjson.loads(second.data))
    assert (orjson.loads(first.data)["base_version"], broadcast["base_version"]) == (0, 1)
    mine, theirs = personal_copy(broadcast, "alice"), personal_copy(broadcast, "bob")
    WorldUpdateEventSchema().load(mine)
    WorldUpdateEventSchema().load(theirs)
    assert mine["user_id"] == mine["actor_id"] == "alice" and mine["snapshot_version"] == 2
    assert [c["operation"] for c in mine["changes"]] == ["remove", "add"]
    assert [c["operation"] for c in theirs["changes"]] == ["remove"], "the inventory add is alice's alone"
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.3)  # one message per commit, whoever is present
    await nc.close()


async def test_world_version_steps_by_exactly_one_per_committed_change(kb_server, kb_http) -> None:
    versions = []
    for args in ({"action": "go", "destination": "main_room"}, {"action": "examine"},
                 {"action": "collect_item", "instance_id": "nothing"}, {"action": "go", "destination": "counter"}):
        _, body = await post_action(kb_http, kb_server, "bob", **args)
        versions.append(body["snapshot_version"])
    assert versions == [1, 1, 1, 2]


async def test_concurrent_double_collect_has_exactly_one_winner(kb_server, kb_http) -> None:
    for user in ("p1", "p2"):
        await post_action(kb_http, kb_server, user, action="go", destination="main_room")
    results = await asyncio.gather(*(post_action(kb_http, kb_server, u, action="collect_item",
                                                 instance_id="dream_bottle_1") for u in ("p1", "p2")))
    assert sorted(body["success"] for _, body in results) == [False, True]
    loser = next(body for _, body in results if not body["success"])
    assert loser["message"] == "There is no dream bottle 1 here." or "no dream bottle" in loser["message"]


async def test_player_state_is_an_area_of_interest(kb_server, kb_http) -> None:
    async with kb_http.get(url(kb_server, f"/experiences/{EXPERIENCE}/players/carol/state")) as resp:
        view = await resp.json()
    assert resp.status == 200 and view["type"] == "area_of_interest" and view["snapshot_version"] == 0
    assert view["player"] == {"current_location": "woanders_shop", "current_area": "entrance", "inventory": []}
    assert "dream_bottle_1" in str(view["areas"]["main_room"])


async def test_client_mistakes_get_4xx_never_500(kb_server, kb_http) -> None:
    base = url(kb_server, f"/experiences/{EXPERIENCE}/actions")
    async with kb_http.post(base, data=b"{oops") as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_json"
    async with kb_http.post(base, json={"user_id": "u", "action": "collect_item"}) as r:
        assert r.status == 422 and (await r.json())["details"] == {"instance_id": ["Missing data for required field."]}
    async with kb_http.post(base, json={"user_id": "u", "action": "fly"}) as r:
        assert r.status == 422 and (await r.json())["error"] == "unknown_action"
    async with kb_http.post(base, json=[1]) as r:
        assert r.status == 422
    async with kb_http.post(url(kb_server, "/experiences/atlantis/actions"), json={"user_id": "u", "action": "inventory"}) as r:
        assert r.status == 404 and (await r.json())["error"] == "unknown_experience"


async def test_service_key_is_required(kb_server) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as http:
        async with http.post(url(kb_server, f"/experiences/{EXPERIENCE}/actions"), json={}) as r:
            assert r.status == 401
        async with http.post(url(kb_server, f"/experiences/{EXPERIENCE}/actions"), json={},
                             headers={"X-API-Key": "wrong"}) as r:
            assert r.status == 401
        async with http.get(url(kb_server, "/health")) as r:
            assert r.status == 200 and (await r.json())["status"] == "healthy"


async def test_without_nats_actions_still_commit_and_health_is_degraded(kb_server, kb_http, nats_server, settings) -> None:
    nats_server.stop()
    async with kb_http.get(url(kb_server, "/health")) as r:
        health = await r.json()
    for _ in range(100):
        if health["status"] == "degraded":
            break
        await asyncio.sleep(0.05)
        async with kb_http.get(url(kb_server, "/health")) as r:
            health = await r.json()
    assert health["status"] == "degraded" and health["nats"]["connected"] is False
    status, body = await post_action(kb_http, kb_server, "dave", action="go", destination="main_room")
    assert status == 200 and body["success"] and body["snapshot_version"] == 1
    async with kb_http.get(url(kb_server, "/health")) as r:
        assert (await r.json())["outbox"]["pending"] == 1


async def test_a_player_gone_from_memory_comes_back_from_the_store_as_it_left(kb_server, kb_http) -> None:
    import time

    from kb.keys import WORLDS
    world = kb_server.app[WORLDS][EXPERIENCE]
    await post_action(kb_http, kb_server, "wanderer", action="collect_item", instance_id="umbrella_1")
    await post_action(kb_http, kb_server, "wanderer", action="go", destination="main_room")
    assert await world.evict_cold(time.time() + world.players_hot_s + 1) >= 1
    assert "wanderer" not in world.world["players"], "absent and not seen lately: out of memory"
    status, body = await post_action(kb_http, kb_server, "wanderer", action="go", destination="entrance")
    assert status == 200 and body["success"], "it still stood in the main room: its row came back"
    assert [i["instance_id"] for i in world.world["players"]["wanderer"]["inventory"]] == ["umbrella_1"]


async def test_views_answers_many_sessions_in_order_and_refuses_one_past_the_user_limit(
        aiohttp_server, settings, nats_server) -> None:
    from dataclasses import replace

    from kb.app import create_app
    from kb.keys import NATS, PRESENCE
    server = await aiohttp_server(create_app(replace(settings, max_connections_per_user=2)))
    assert await server.app[NATS].wait_ready(10)
    sessions = [{"user_id": u, "session_id": f"s{i}", "gateway_id": "gw"}
                for i, u in enumerate(["ann", "bo", "ann", "ann", "cy"])]
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        async with http.post(url(server, f"/experiences/{EXPERIENCE}/views"), json={"sessions": sessions}) as resp:
            assert resp.status == 200
            views = (await resp.json())["views"]
        assert [v.get("type") or v["error"] for v in views] == [
            "area_of_interest", "area_of_interest", "area_of_interest", "too_many_sessions", "area_of_interest"]
        # each view is its own session's: its player is in the roster it carries
        assert all(any(p["user_id"] == asked["user_id"] for p in view["players"])
                   for asked, view in zip(sessions, views) if "players" in view)
        assert server.app[PRESENCE].live_sessions(EXPERIENCE, "ann") == 2
        async with http.post(url(server, f"/experiences/{EXPERIENCE}/views"), json={"sessions": []}) as resp:
            assert resp.status == 422  # at least one session
        bad = [{"user_id": "a.b", "session_id": "s9"}]
        async with http.post(url(server, f"/experiences/{EXPERIENCE}/views"), json={"sessions": bad}) as resp:
            assert resp.status == 422 and "sessions" in (await resp.json())["details"]


async def test_a_bad_entry_in_a_presence_report_is_a_422_naming_its_place(kb_server, kb_http) -> None:
    bad = {"gateway_id": "gw", "join": [{"session_id": "s1", "user_id": "u", "experience": EXPERIENCE},
                                        {"session_id": "", "user_id": "u", "experience": EXPERIENCE}]}
    async with kb_http.post(url(kb_server, "/presence"), json=bad) as resp:
        assert resp.status == 422
        assert (await resp.json())["details"] == {"join": {"1": {"session_id": ["Length must be between 1 and 128."]}}}


@pytest.mark.parametrize("user_id", ["eve.>", "victim\n", "a b", "*"])
async def test_a_presence_report_with_a_user_id_that_is_no_subject_token_is_refused(kb_server, kb_http,
                                                                                     user_id) -> None:
    report = {"gateway_id": "gw", "join": [{"session_id": "s1", "user_id": user_id, "experience": EXPERIENCE}]}
    async with kb_http.post(url(kb_server, "/presence"), json=report) as resp:
        assert resp.status == 422
        assert (await resp.json())["details"] == {"join": {"0": {"user_id": ["not a valid user id"]}}}


async def test_presence_of_unknown_experiences_and_reserved_ids_is_ignored_and_never_announced(kb_server,
                                                                                               kb_http) -> None:
    sessions = [{"session_id": f"s{i}", "user_id": "mallory", "experience": f"nowhere{i}"} for i in range(50)]
    sessions += [{"session_id": "w", "user_id": "world", "experience": EXPERIENCE},
                 {"session_id": "n", "user_id": "louisa", "experience": EXPERIENCE},
                 {"session_id": "ok", "user_id": "alice", "experience": EXPERIENCE}]
    async with kb_http.post(url(kb_server, "/presence"), json={"gateway_id": "gw", "join": sessions}) as resp:
        assert resp.status == 200 and (await resp.json())["ignored"] == 52
    book = kb_server.app[PRESENCE]
    assert set(book.sessions) == {"ok"} and book.present_users(EXPERIENCE) == {"alice"}


@pytest.mark.parametrize("user_id", ["world", "louisa"])
async def test_the_world_and_its_npcs_are_no_players(kb_server, kb_http, user_id) -> None:
    status, body = await post_action(kb_http, kb_server, user_id, action="go", destination="main_room")
    assert status == 403 and body["error"] == "reserved_user_id"
    async with kb_http.get(url(kb_server, f"/experiences/{EXPERIENCE}/players/{user_id}/state")) as resp:
        assert resp.status == 403
    views = {"sessions": [{"user_id": user_id, "session_id": "s", "gateway_id": "gw"}]}
    async with kb_http.post(url(kb_server, f"/experiences/{EXPERIENCE}/views"), json=views) as resp:
        assert resp.status == 403
    async with kb_http.get(url(kb_server, "/health")) as resp:
        assert user_id in (await resp.json())["reserved_user_ids"]
