"""Two experiences served at once (wylding-woods and the example studio's tinkers-cellar), each with its own subject,
clock, presence and actions: played over the WebSocket and SSE chat, reloaded while it runs."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import examples
from harness.client.sse import read_events
from harness.client.world import normalise
from harness.client.ws import GaiaClient
from kb.world.content import DATA_DIR
from shared.config import Settings
from tests.helpers import EXPERIENCE, eventually

CELLAR = "tinkers-cellar"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Ours from kb/data, the studio's from a copy of examples/worlds (a test edits it), in a development kb."""
    shutil.copytree(examples.WORLDS, tmp_path / "studio")
    return replace(settings, kb_data_dir=f"{DATA_DIR},{tmp_path / 'studio'}", env="dev", presence_window_ms=1)


async def play(client: GaiaClient, action: str, **args: Any) -> dict[str, Any]:
    """An action, answered and its own world_update applied."""
    answer = await client.act(action, **args)
    if answer.get("snapshot_version") is not None:
        await client.reached(answer["snapshot_version"])
    return answer


async def in_sync(version: int, *clients: GaiaClient) -> None:
    """Each client, once at `version`, holds what a fresh snapshot says."""
    for client in clients:
        await client.reached(version)
        local = normalise(client.world.view or {})
        fresh = await client.get_state()
        assert local == normalise({k: v for k, v in fresh.items() if k != "type"}), client.user_id


def own_frames_only(client: GaiaClient, experience: str) -> None:
    """Every world_update and presence frame a client got is of its experience."""
    kinds = ("world_update", "presence", "presence_batch")
    assert {f["experience"] for f in client.frames if f.get("type") in kinds} <= {experience}, client.user_id


async def test_authoring_two_experiences_play_side_by_side_and_nobody_sees_the_others_events(players) -> None:
    ann = await players("ann", EXPERIENCE)
    bob, cat = await players("bob", CELLAR), await players("cat", CELLAR)
    await eventually(lambda: set(bob.roster) == {"bob", "cat"} and set(cat.roster) == {"bob", "cat"})
    assert set(ann.roster) == {"ann"}, "presence is per experience"

    for area in ("workshop", "storeroom"):
        assert (await play(bob, "go", destination=area))["success"]
    assert (await play(ann, "go", destination="main_room"))["success"]
    opened = await play(bob, "open", instance_id="iron chest")  # the studio's action, over the WebSocket
    assert opened["success"] and opened["message"].startswith("You open the iron chest. Inside:")
    await bob.reached(opened["snapshot_version"])
    floor = bob.world.view["areas"]["storeroom"]["spots"]["floor"]["items"]  # type: ignore[index]
    assert [i["instance_id"] for i in floor] == ["iron_chest_1", "brass_gear_1", "coiled_spring_1"]
    await cat.reached(opened["snapshot_version"])
    cats = next(f for f in cat.frames if f.get("type") == "world_update"
                and f["snapshot_version"] == opened["snapshot_version"])
    assert cats["changes"] == [], "cat stands on the stairs: under location visibility only the version step"

    for item in ("brass gear", "coiled spring"):
        assert (await play(bob, "collect_item", instance_id=item))["success"]
    await bob.send({"type": "action", "id": "half", "action": "craft", "instance_id": "brass gear"})
    refused = await bob.next("error")
    assert (refused["id"], refused["code"], refused["details"]) == (
        "half", "invalid_message", {"with_id": ["Missing data for required field."]}), "the gateway checks the frame"
    made = await play(bob, "craft", instance_id="brass gear", with_id="coiled spring")
    assert made["success"] and "clockwork beetle" in made["message"]
    elsewhere = await ann.act("open", instance_id="dream bottle")
    assert (elsewhere["type"], elsewhere["code"]) == ("error", "unknown_action"), "wylding-woods offers no `open`"
    took = await play(ann, "collect_item", instance_id="dream bottle")
    assert took["success"]

    await in_sync(took["snapshot_version"], ann)
    await in_sync(made["snapshot_version"], bob, cat)
    for client, experience in ((ann, EXPERIENCE), (bob, CELLAR), (cat, CELLAR)):
        own_frames_only(client, experience)
    assert ann.world.version != bob.world.version, "each experience counts its own versions"


async def test_authoring_chat_reaches_the_added_action_where_it_is_offered_and_the_built_in_one_elsewhere(
        players, gateway_server, token) -> None:
    ann, dan = await players("ann", EXPERIENCE), await players("dan", CELLAR)
    for line in ("go to the main room", "take dream bottle"):
        [f async for f in ann.chat(line)]
    done = [f async for f in ann.chat("open the dream bottle")][-1]
    assert (done["action"], done["success"]) == ("use_item", True), "in wylding-woods `open` is use_item's verb"

    async def sse_chat(http: aiohttp.ClientSession, line: str) -> list[dict[str, Any]]:
        async with http.post(gateway_server.make_url("/chat/unified"), json={"message": line, "experience": CELLAR,
                                                                             "stream": True},
                             headers={"Authorization": f"Bearer {token('eve')}"}) as resp:
            assert resp.status == 200
            return [e.json() for e in [e async for e in read_events(resp)] if e.data != "[DONE]"]
    async with aiohttp.ClientSession() as http:
        for line in ("go to the workshop", "go to the storeroom"):
            await sse_chat(http, line)
        frames = await sse_chat(http, "open the iron chest")
        kinds = [f.get("type") or f.get("object") for f in frames]
        first_chunk = kinds.index("chat.completion.chunk")
        update = next(f for f in frames if f.get("type") == "world_update")
        assert kinds.index("world_update") < first_chunk and update["experience"] == CELLAR
        assert {c["instance_id"] for c in update["changes"]} == {"iron_chest_1", "brass_gear_1", "coiled_spring_1"}
        story = "".join(f["choices"][0]["delta"]["content"] for f in frames if f.get("object"))
        assert story == "You open the iron chest. Inside: a brass gear, a coiled spring."
        for line in ("take the brass gear", "take the coiled spring"):
            await sse_chat(http, line)
        frames = await sse_chat(http, "combine the brass gear with the coiled spring")
        story = "".join(f["choices"][0]["delta"]["content"] for f in frames if f.get("object"))
        assert story.startswith("You fit the brass gear to the coiled spring")
    await dan.get_state()
    own_frames_only(dan, CELLAR)
    own_frames_only(ann, EXPERIENCE)


async def test_authoring_a_reloaded_experience_sends_its_players_to_a_snapshot_and_leaves_the_other_alone(
        players, kb_server, kb_http, tmp_path) -> None:
    ann, bob = await players("ann", EXPERIENCE), await players("bob", CELLAR)
    zone = tmp_path / "studio" / CELLAR / "zone.json"
    data = json.loads(zone.read_text())
    data["areas"]["stairs"]["description"] = "The stairs, repainted."
    zone.write_text(json.dumps(data))
    async with kb_http.post(kb_server.make_url(f"/experiences/{CELLAR}/reload")) as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["version"] == answer["from_version"] + 2
    await eventually(lambda: bob.world.gaps >= 1)  # its chain broke on purpose: it asks for a snapshot
    fresh = await bob.get_state()
    assert fresh["areas"]["stairs"]["description"] == "The stairs, repainted."
    went = await play(bob, "go", destination="workshop")
    assert went["success"]
    await in_sync(0, ann)
    await in_sync(went["snapshot_version"], bob)
    assert ann.world.gaps == 0 and ann.world.version == 0, "wylding-woods saw nothing of it"


class TestClocks:
    """Each experience's clock moves its own NPCs and environment."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return replace(settings, kb_clock_tick_s=0.2)

    async def test_authoring_each_experience_ticks_its_own_npcs_and_cycles(self, players) -> None:
        ann, bob = await players("ann", EXPERIENCE), await players("bob", CELLAR)

        def paths(client: GaiaClient) -> set[str]:
            return {c["path"] for f in client.frames if f.get("type") == "world_update" for c in f["changes"]
                    if c.get("path")}
        await eventually(lambda: {"npcs.louisa.area_id", "environment.weather"} <= paths(ann)
                         and {"environment.steam", "environment.time_of_day"} <= paths(bob), timeout=20)
        assert not {p for p in paths(ann) if "pip" in p or "steam" in p}
        assert not {p for p in paths(bob) if "louisa" in p or "weather" in p}
        await eventually(lambda: bob.world.view["npcs"]["pip"]["area_id"] != "workshop", timeout=20)  # type: ignore[index]
        own_frames_only(ann, EXPERIENCE)
        own_frames_only(bob, CELLAR)
