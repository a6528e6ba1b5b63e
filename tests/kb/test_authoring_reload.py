"""Content that changes: reloaded in development (POST .../reload), adopted as a new version when kb starts on it."""
from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import nats
import orjson
import pytest

import examples
from kb.app import create_app as create_kb
from kb.keys import NATS as KB_NATS
from kb.keys import WORLDS
from kb.world.content import DATA_DIR
from shared.config import Settings
from tests.helpers import EXPERIENCE

CELLAR = "tinkers-cellar"


@pytest.fixture
def worlds(tmp_path: Path) -> Path:
    """Copies of both shipped experiences, free to edit."""
    folder = tmp_path / "worlds"
    shutil.copytree(DATA_DIR / EXPERIENCE, folder / EXPERIENCE)
    shutil.copytree(examples.WORLDS / CELLAR, folder / CELLAR)
    return folder


@pytest.fixture
def settings(settings: Settings, worlds: Path) -> Settings:
    return replace(settings, kb_data_dir=str(worlds), env="dev")


def edit(folder: Path, file: str, change: Callable[[Any], None]) -> None:
    data = json.loads((folder / file).read_text())
    change(data)
    (folder / file).write_text(json.dumps(data, indent=1))


async def call(kb_http, kb_server, path: str, **body: Any) -> tuple[int, dict[str, Any]]:
    async with kb_http.post(kb_server.make_url(path), json=body or None) as resp:
        return resp.status, await resp.json()


async def test_authoring_a_reload_adopts_valid_content_in_one_step_that_skips_a_version(
        kb_server, kb_http, worlds, nats_server) -> None:
    nc = await nats.connect(nats_server.url_as("operator"))
    sub = await nc.subscribe(f"world.updates.exp.{EXPERIENCE}")
    for area in ("main_room", "back_room"):
        await call(kb_http, kb_server, f"/experiences/{EXPERIENCE}/actions", user_id="ann", action="go",
                   destination=area)

    def without_back_room(data: dict) -> None:
        del data["areas"]["back_room"]
        for area in data["areas"].values():
            area["exits"] = [e for e in area["exits"] if e != "back_room"]
    edit(worlds / EXPERIENCE, "zone.json", without_back_room)
    edit(worlds / EXPERIENCE, "items.json", lambda d: d.update(instances=[
        i for i in d["instances"] if i["area_id"] != "back_room"]))
    status, answer = await call(kb_http, kb_server, f"/experiences/{EXPERIENCE}/reload")
    assert status == 200 and (answer["from_version"], answer["version"]) == (2, 4), answer
    assert answer["notes"] == ["area removed: back_room (with what lay in it)",
                               "player moved to the start area: from back_room"]
    events = [orjson.loads((await sub.next_msg(timeout=5)).data) for _ in range(3)]
    reload = events[-1]
    assert (reload["base_version"], reload["snapshot_version"], reload["changes"]) == (3, 4, []), \
        "every client's chain breaks here: each asks for a snapshot"
    async with kb_http.get(kb_server.make_url(f"/experiences/{EXPERIENCE}/players/ann/state")) as resp:
        view = await resp.json()
    assert view["snapshot_version"] == 4 and "back_room" not in view["areas"]
    assert view["player"]["current_area"] == "entrance"
    status, answer = await call(kb_http, kb_server, f"/experiences/{EXPERIENCE}/reload")
    assert (status, answer["version"], answer["notes"]) == (200, 4, ["unchanged"])
    await nc.close()


async def test_authoring_invalid_content_is_not_reloaded_and_every_problem_is_named(kb_server, kb_http,
                                                                                    worlds) -> None:
    edit(worlds / CELLAR, "zone.json", lambda d: d["areas"]["stairs"]["exits"].append("attic"))
    edit(worlds / CELLAR, "npcs.json", lambda d: d["pip"]["route"].append("loft"))
    status, answer = await call(kb_http, kb_server, f"/experiences/{CELLAR}/reload")
    assert status == 422 and answer["error"] == "invalid_content"
    assert answer["details"]["problems"] == [
        "npcs.json: $.pip.route[8]: npc 'pip' walks through unknown area 'loft'",
        "zone.json: $.areas.stairs.exits[2]: area 'stairs' exits to unknown area 'attic'"]
    assert kb_server.app[WORLDS][CELLAR].world["version"] == 0, "nothing changed"


async def test_authoring_only_a_development_kb_reloads(aiohttp_server, settings) -> None:
    server = await aiohttp_server(create_kb(replace(settings, env="")))
    async with __import__("aiohttp").ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        async with http.post(server.make_url(f"/experiences/{CELLAR}/reload")) as resp:
            assert resp.status == 403 and "restart kb" in (await resp.json())["message"]


async def test_authoring_kb_started_on_changed_content_migrates_the_saved_world_as_a_new_version(
        aiohttp_server, settings, worlds, kb_http) -> None:
    first = await aiohttp_server(create_kb(settings))
    assert await first.app[KB_NATS].wait_ready(10)
    for user, area in (("ann", "workshop"), ("ann", "storeroom"), ("bob", "coal_chute")):
        await call(kb_http, first, f"/experiences/{CELLAR}/actions", user_id=user, action="go", destination=area)
    await call(kb_http, first, f"/experiences/{CELLAR}/actions", user_id="ann", action="open", instance_id="iron chest")
    await call(kb_http, first, f"/experiences/{CELLAR}/actions", user_id="ann", action="collect_item",
               instance_id="brass gear")
    await first.close()

    def without_coal_chute(data: dict) -> None:
        del data["areas"]["coal_chute"]
        for area in data["areas"].values():
            area["exits"] = [e for e in area["exits"] if e != "coal_chute"]
    edit(worlds / CELLAR, "zone.json", without_coal_chute)
    edit(worlds / CELLAR, "npcs.json", lambda d: d["pip"].update(route=[a for a in d["pip"]["route"]
                                                                        if a != "coal_chute"]))
    edit(worlds / CELLAR, "items.json", lambda d: (d["templates"].pop("brass_gear"), d.update(instances=[
        i for i in d["instances"] if i["template_id"] != "brass_gear"]), d["templates"]["clockwork_beetle"][
        "properties"].update(crafted_from=["coiled_spring", "oil_can"])))
    second = await aiohttp_server(create_kb(settings))
    world = second.app[WORLDS][CELLAR]
    assert world.world["version"] == 7, "v5 saved, the migration committed as v7 (one version skipped)"
    assert world.view("bob")["player"]["current_area"] == "stairs", "bob stood in the removed coal chute"
    assert world.view("ann")["player"]["inventory"] == [], "the brass gear went with its template"
    floor = world.view("ann")["areas"]["storeroom"]["spots"]["floor"]["items"]
    assert [i["instance_id"] for i in floor] == ["iron_chest_1", "coiled_spring_1"], "the rest as the players left it"
    rows = sqlite3.connect(settings.kb_db_path).execute(
        "SELECT area_id FROM areas WHERE experience = ?", (CELLAR,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(world.world["areas"]), "the removed area's row is gone from the store"
    assert second.app[WORLDS][EXPERIENCE].world["version"] == 0, "the other experience, unchanged, is not touched"
