"""The content checker: broken worlds get every problem at once (file, JSON path, what), exit 2, never a traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from jsonschema import Draft202012Validator

import examples
from kb.check import main as check_main
from kb.world.content import DATA_DIR, ContentError, check_folder, load_content
from kb.world.contentcheck import SCHEMAS, Problem
from kb.world.model import initial_world

ROOT = Path(__file__).resolve().parents[2]
CELLAR = examples.WORLDS / "tinkers-cellar"


def world_copy(tmp_path: Path, source: Path = DATA_DIR / "wylding-woods", name: str = "") -> Path:
    """A copy of a shipped experience to break."""
    folder = tmp_path / (name or source.name)
    shutil.copytree(source, folder)
    return folder


def edit(folder: Path, file: str, change: Callable[[Any], None]) -> None:
    data = json.loads((folder / file).read_text())
    change(data)
    (folder / file).write_text(json.dumps(data))


def where(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.file, p.path) for p in problems}


def test_authoring_every_schema_is_a_valid_json_schema_and_the_shipped_worlds_pass() -> None:
    for path in SCHEMAS.glob("*.schema.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == ["items.schema.json", "npcs.schema.json",
                                                                      "zone.schema.json"]
    assert check_folder(DATA_DIR / "wylding-woods", {}) == []
    from kb.actions import AddedActions
    assert check_folder(CELLAR, AddedActions.load(examples.ACTION_MODULES).checks) == []


def test_authoring_a_broken_world_reports_every_problem_at_once_with_file_and_json_path(tmp_path: Path) -> None:
    folder = world_copy(tmp_path)

    def zone(data: dict) -> None:
        data["areas"]["garden"]["exits"].append("cellar")  # a dangling exit
        data["areas"]["counter"]["name"] = 42  # a wrong type

    def items(data: dict) -> None:
        data["instances"][0]["spot_id"] = "shelf_9"  # an item on an unknown spot
        data["instances"].append(dict(data["instances"][1]))  # a duplicate instance id

    def npcs(data: dict) -> None:
        data["louisa"]["route"].insert(1, "attic")  # a route through a missing area
    edit(folder, "zone.json", zone)
    edit(folder, "items.json", items)
    edit(folder, "npcs.json", npcs)
    problems = check_folder(folder, {})
    assert where(problems) == {
        ("zone.json", "$.areas.garden.exits[2]"), ("zone.json", "$.areas.counter.name"),
        ("items.json", "$.instances[0].spot_id"), ("items.json", "$.instances[8].instance_id"),
        ("npcs.json", "$.louisa.route[1]")}, problems
    said = {p.path: p.message for p in problems}
    assert said["$.areas.garden.exits[2]"] == "area 'garden' exits to unknown area 'cellar'"
    assert said["$.areas.counter.name"] == "42 is not of type 'string'"
    assert "unknown spot 'shelf_9'" in said["$.instances[0].spot_id"]
    assert "duplicate instance id 'dream_bottle_2' (first at $.instances[1])" == said["$.instances[8].instance_id"]
    assert said["$.louisa.route[1]"] == "npc 'louisa' walks through unknown area 'attic'"
    with pytest.raises(ContentError) as raised:  # kb at start: the same problems, not a KeyError
        load_content("wylding-woods", tmp_path)
    assert len(raised.value.problems) == 5 and "zone.json: $.areas.garden.exits[2]" in str(raised.value)


@pytest.mark.parametrize("case,change,expected", [
    ("an empty world", lambda d: d.update(areas={}), ("zone.json", "$.areas")),
    ("no start area", lambda d: d.pop("start_area"), ("zone.json", "$")),
    ("a start area that is not one", lambda d: d.update(start_area="attic"), ("zone.json", "$.start_area")),
    ("an exit to itself", lambda d: d["areas"]["garden"]["exits"].append("garden"),
     ("zone.json", "$.areas.garden.exits[2]")),
    ("an unknown visibility", lambda d: d.update(visibility="fog"), ("zone.json", "$.visibility")),
    ("a misspelt field", lambda d: d["areas"]["garden"].update(exts=[]), ("zone.json", "$.areas.garden")),
    ("an id with a dot", lambda d: d["areas"].update({"a.b": {"name": "x", "description": ""}}),
     ("zone.json", "$.areas")),
    ("an environment cycle of nothing", lambda d: d["environment"].update(weather=[]),
     ("zone.json", "$.environment.weather")),
])
def test_authoring_each_zone_mistake_is_named(tmp_path: Path, case: str, change: Callable[[Any], None],
                                              expected: tuple[str, str]) -> None:
    folder = world_copy(tmp_path)
    edit(folder, "zone.json", change)
    assert expected in where(check_folder(folder, {})), case


@pytest.mark.parametrize("file,change,expected", [
    ("items.json", lambda d: d["instances"][0].update(template_id="dream_jar"), "$.instances[0].template_id"),
    ("items.json", lambda d: d["instances"][0].pop("spot_id"), "$.instances[0]"),
    ("items.json", lambda d: d["instances"][0].update(area_id="attic"), "$.instances[0].area_id"),
    ("items.json", lambda d: d["instances"][0].update(inside="moon_key_1"), "$.instances[0]"),
    ("items.json", lambda d: d["instances"].append({"instance_id": "x", "template_id": "umbrella", "inside": "nope"}),
     "$.instances[8].inside"),
    ("items.json", lambda d: d["templates"]["umbrella"].update(use={"state": {}}), "$.templates.umbrella.use"),
    ("items.json", lambda d: d["instances"][0].update(respawn_s=-1), "$.instances[0].respawn_s"),
    ("npcs.json", lambda d: d["louisa"].update(wants="nothing_at_all"), "$.louisa.wants"),
    ("npcs.json", lambda d: d["louisa"].update(area_id="attic"), "$.louisa.area_id"),
    ("npcs.json", lambda d: d.update(world=dict(d["louisa"])), "$.world"),
    ("npcs.json", lambda d: d["louisa"]["dialogue"].pop("greeting"), "$.louisa.dialogue"),
])
def test_authoring_each_item_and_npc_mistake_is_named(tmp_path: Path, file: str, change: Callable[[Any], None],
                                                      expected: str) -> None:
    folder = world_copy(tmp_path)
    edit(folder, file, change)
    assert (file, expected) in where(check_folder(folder, {}))


def test_authoring_missing_and_unparsable_files_are_problems_too(tmp_path: Path) -> None:
    folder = world_copy(tmp_path)
    (folder / "npcs.json").unlink()
    (folder / "items.json").write_text('{"templates": {,}')
    problems = check_folder(folder, {})
    assert [(p.file, p.path) for p in problems] == [("items.json", "$"), ("npcs.json", "$")]
    assert problems[0].message.startswith("not valid JSON") and problems[1].message.startswith("missing")


def test_authoring_offered_actions_must_be_added_and_their_own_checks_run(tmp_path: Path) -> None:
    from kb.actions import AddedActions
    checks = AddedActions.load(examples.ACTION_MODULES).checks
    folder = world_copy(tmp_path, CELLAR)
    assert [str(p) for p in check_folder(folder, {})] == [
        f"zone.json: $.actions[{n}]: action {name!r} is not added by any module in GAIA_ACTION_MODULES "
        "(built-in actions are never listed)" for n, name in enumerate(("open", "close", "craft"))]
    edit(folder, "items.json", lambda d: d["templates"]["clockwork_beetle"]["properties"].update(
        crafted_from=["brass_gear", "cog"]))
    edit(folder, "zone.json", lambda d: d["actions"].append("go"))
    assert where(check_folder(folder, checks)) == {
        ("items.json", "$.templates.clockwork_beetle.properties.crafted_from[1]"), ("zone.json", "$.actions[3]")}


def test_authoring_items_with_state_and_inside_a_container_start_where_the_content_says() -> None:
    from kb.actions import AddedActions
    content = load_content("tinkers-cellar", examples.WORLDS, AddedActions.load(examples.ACTION_MODULES).checks)
    world = initial_world(content)
    [chest] = world["areas"]["storeroom"]["spots"]["floor"]["items"]
    assert chest["state"]["open"] is False
    assert [i["instance_id"] for i in chest["state"]["contents"]] == ["brass_gear_1", "coiled_spring_1"]
    assert world["areas"]["stairs"]["spots"]["hook"]["items"][0]["state"] == {"lit": False}
    assert content.cycle_every == {"steam": 2, "time_of_day": 4} and content.visibility == "location"
    assert world["environment"] == {"steam": "hissing", "time_of_day": "morning"}


def test_authoring_gaia_kb_check_prints_one_line_per_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    folder = world_copy(tmp_path)
    edit(folder, "zone.json", lambda d: d["areas"]["garden"]["exits"].append("cellar"))
    edit(folder, "npcs.json", lambda d: d["louisa"]["route"].append("attic"))
    assert check_main([str(tmp_path), "--actions", ""]) == 2
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"{folder}/npcs.json: $.louisa.route[4]: npc 'louisa' walks through unknown area 'attic'",
        f"{folder}/zone.json: $.areas.garden.exits[2]: area 'garden' exits to unknown area 'cellar'"]
    assert "2 problem(s)" in out.err
    assert check_main([str(tmp_path / "nowhere"), "--actions", ""]) == 2  # an empty world: nothing to load
    assert "does not exist" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert check_main([str(tmp_path / "empty"), "--actions", ""]) == 2
    assert "holds no experience" in capsys.readouterr().out
    assert check_main([str(CELLAR), "--actions", "no.such.module"]) == 2
    assert "cannot import 'no.such.module'" in capsys.readouterr().out
    assert check_main([str(examples.WORLDS), "--actions", ",".join(examples.ACTION_MODULES)]) == 0
    assert capsys.readouterr().out == "ok: tinkers-cellar\n"


def test_authoring_the_command_and_kb_at_start_never_answer_with_a_traceback(tmp_path: Path) -> None:
    folder = world_copy(tmp_path)
    (folder / "zone.json").write_text("[1, 2")
    checked = subprocess.run([sys.executable, "-m", "kb", "check", str(folder)], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
    assert checked.returncode == 2 and "Traceback" not in checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"{folder}/zone.json: $: not valid JSON")
    # `-o install`: the suite runs on an installed tree (`make test` installs first); the target, not pip, is tested
    made = subprocess.run(["make", "-s", "-o", "install", "check-world", f"DIR={folder}"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert made.returncode == 2 and f"{folder}/zone.json: $: not valid JSON" in made.stdout
    started = subprocess.run([sys.executable, "-m", "kb", "--port", "1"], capture_output=True, text=True, cwd=ROOT,
                             timeout=60, env={"GAIA_ENV": "dev", "GAIA_KB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin",
                                              "GAIA_NATS_URL": "nats://127.0.0.1:1", "GAIA_KB_DB_PATH":
                                              str(tmp_path / "kb.sqlite3")})
    assert started.returncode != 0 and "Traceback" not in started.stderr, started.stderr
    assert "kb cannot start: experience 'wylding-woods'" in started.stderr
    assert "zone.json: $: not valid JSON" in started.stderr
