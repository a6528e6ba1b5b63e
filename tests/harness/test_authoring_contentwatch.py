"""`make run`'s content watcher against a real kb: a saved change reloads, a broken one says why in one line."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

import examples
from harness.system.contentwatch import ContentWatch, kb_reloader
from harness.system.devstack import content_settings
from kb.keys import WORLDS
from kb.world.content import DATA_DIR, data_dirs
from shared.config import Settings

CELLAR = "tinkers-cellar"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    shutil.copytree(examples.WORLDS, tmp_path / "studio")
    return replace(settings, kb_data_dir=f"{DATA_DIR},{tmp_path / 'studio'}", env="dev")


def test_authoring_make_run_serves_both_experiences_with_the_examples_actions_unless_told_otherwise() -> None:
    chosen = content_settings({})
    assert data_dirs(chosen["kb_data_dir"]) == [DATA_DIR, examples.WORLDS]
    assert chosen["action_modules"] == "examples.tinkers.actions"
    assert content_settings({"GAIA_KB_DATA_DIR": "/mine", "GAIA_ACTION_MODULES": ""}) == {
        "kb_data_dir": "/mine", "action_modules": ""}


async def test_authoring_a_saved_change_is_reloaded_a_broken_one_is_refused_in_one_line(
        kb_server, settings, tmp_path: Path) -> None:
    said: list[str] = []
    zone = tmp_path / "studio" / CELLAR / "zone.json"
    async with aiohttp.ClientSession() as http:
        reload = kb_reloader(http, str(kb_server.make_url("")).rstrip("/"), settings.kb_api_key)
        watch = ContentWatch(data_dirs(settings.kb_data_dir), reload, said.append)
        assert await watch.scan() == [], "nothing saved, nothing said"

        zone.write_text(zone.read_text().replace('"start_area": "stairs"', '"start_area": "attic"'))
        [broken] = await watch.scan()
        assert broken == f"{CELLAR}: not reloaded: zone.json: $.start_area: start_area 'attic' is not an area"
        assert kb_server.app[WORLDS][CELLAR].world["version"] == 0

        zone.write_text(zone.read_text().replace('"start_area": "attic"', '"start_area": "workshop"'))
        [fixed] = await watch.scan()
        assert fixed.startswith(f"{CELLAR}: reloaded, world v0 -> v2 (players get a snapshot)"), fixed
        assert kb_server.app[WORLDS][CELLAR].content.start_area == "workshop"

        zone.write_text(zone.read_text() + "\n")  # saved again, bytes changed, content the same
        assert await watch.scan() == [f"{CELLAR}: content saved, nothing in it changed"]
        (tmp_path / "studio" / CELLAR / "npcs.json").write_text("{")
        (tmp_path / "studio" / CELLAR / "zone.json").write_text("[]")
        [two] = await watch.scan()
        assert two.startswith(f"{CELLAR}: not reloaded: npcs.json: $: not valid JSON") and "(and 1 more: " in two
    assert said == [broken, fixed, f"{CELLAR}: content saved, nothing in it changed", two]
