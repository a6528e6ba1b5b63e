"""Every problem of an experience's files at once: each against its JSON Schema, then what they say of each other."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
FILES = ("zone.json", "items.json", "npcs.json")
RESERVED_NPC_IDS = ("world",)  # the actor id of the world's own changes (kb/worldservice.py)
# An added action's check: content -> (file, JSON path, message) for each problem of its own data.
ActionCheck = Callable[[Any], Iterable[tuple[str, str, str]]]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong: in which file, where in it (a JSON path), and what."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


@functools.cache
def validator(file: str) -> Draft202012Validator:
    """The JSON Schema of one content file (kb/world/schemas/<name>.schema.json), compiled once."""
    schema = json.loads((SCHEMAS / file.replace(".json", ".schema.json")).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_problems(file: str, data: Any) -> list[Problem]:
    """Where `data` breaks its file's JSON Schema, each place once."""
    errors = sorted(validator(file).iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [Problem(file, e.json_path, _short(e.message)) for e in errors]


def _short(message: str) -> str:
    """jsonschema quotes a whole failing value; a long one is cut so each problem stays one line."""
    return message if len(message) <= 300 else message[:297] + "..."


def reference_problems(zone: dict[str, Any], items: dict[str, Any], npcs: dict[str, Any],
                       actions: Mapping[str, ActionCheck | None] | None) -> list[Problem]:
    """What the files say of each other: exits, placements, routes, wants, ids, offered actions.

    `actions`: the added actions registered (name -> its own check, if any); None skips the action checks.
    """
    areas = zone.get("areas", {})
    found = list(_zone_refs(zone, areas))
    found += _item_refs(items, areas)
    found += _npc_refs(npcs, areas, items.get("templates", {}))
    if actions is not None:
        found += _action_refs(zone, actions)
    return found


def _zone_refs(zone: dict[str, Any], areas: dict[str, Any]) -> Iterator[Problem]:
    if zone.get("start_area") not in areas:
        yield Problem("zone.json", "$.start_area", f"start_area {zone.get('start_area')!r} is not an area")
    for area_id, area in areas.items():
        for n, exit_id in enumerate(area.get("exits", [])):
            where = f"$.areas.{area_id}.exits[{n}]"
            if exit_id == area_id:
                yield Problem("zone.json", where, f"area {area_id!r} exits to itself")
            elif exit_id not in areas:
                yield Problem("zone.json", where, f"area {area_id!r} exits to unknown area {exit_id!r}")


def _item_refs(items: dict[str, Any], areas: dict[str, Any]) -> Iterator[Problem]:
    templates, instances = items.get("templates", {}), items.get("instances", [])
    first: dict[str, int] = {}
    for n, inst in enumerate(instances):
        where, inst_id = f"$.instances[{n}]", inst.get("instance_id")
        if inst_id in first:
            yield Problem("items.json", f"{where}.instance_id",
                          f"duplicate instance id {inst_id!r} (first at $.instances[{first[inst_id]}])")
        first.setdefault(inst_id, n)
        if inst.get("template_id") not in templates:
            yield Problem("items.json", f"{where}.template_id", f"unknown template {inst.get('template_id')!r}")
        yield from _placement(inst, where, areas, instances)


def _placement(inst: dict[str, Any], where: str, areas: dict[str, Any],
               instances: list[dict[str, Any]]) -> Iterator[Problem]:
    """An instance lies on a spot of an area, or inside an item that lies on one."""
    on_spot, inside = "area_id" in inst, inst.get("inside")
    if on_spot == (inside is not None):
        yield Problem("items.json", where, "an instance needs area_id and spot_id, or inside (one of the two)")
    elif on_spot and inst["area_id"] not in areas:
        yield Problem("items.json", f"{where}.area_id", f"unknown area {inst['area_id']!r}")
    elif on_spot and inst.get("spot_id") not in areas[inst["area_id"]].get("spots", {}):
        yield Problem("items.json", f"{where}.spot_id",
                      f"item {inst.get('instance_id')!r} is placed on unknown spot {inst.get('spot_id')!r} "
                      f"of area {inst['area_id']!r}")
    elif inside is not None:
        holder = next((i for i in instances if i.get("instance_id") == inside), None)
        if holder is None:
            yield Problem("items.json", f"{where}.inside", f"inside unknown instance {inside!r}")
        elif "area_id" not in holder:
            yield Problem("items.json", f"{where}.inside", f"{inside!r} is not on a spot (items nest one deep)")
        if "respawn_s" in inst:
            yield Problem("items.json", f"{where}.respawn_s", "only an item placed on a spot respawns")


def _npc_refs(npcs: dict[str, Any], areas: dict[str, Any], templates: dict[str, Any]) -> Iterator[Problem]:
    for npc_id, npc in npcs.items():
        if npc_id == "$schema" or not isinstance(npc, dict):
            continue
        where = f"$.{npc_id}"
        if npc_id in RESERVED_NPC_IDS:
            yield Problem("npcs.json", where, f"{npc_id!r} is reserved for the world's own changes")
        if npc.get("area_id") not in areas:
            yield Problem("npcs.json", f"{where}.area_id",
                          f"npc {npc_id!r} stands in unknown area {npc.get('area_id')!r}")
        for n, area_id in enumerate(npc.get("route", [])):
            if area_id not in areas:
                yield Problem("npcs.json", f"{where}.route[{n}]",
                              f"npc {npc_id!r} walks through unknown area {area_id!r}")
        if "wants" in npc and npc["wants"] not in templates:
            yield Problem("npcs.json", f"{where}.wants", f"npc {npc_id!r} wants unknown template {npc['wants']!r}")


def _action_refs(zone: dict[str, Any], actions: Mapping[str, ActionCheck | None]) -> Iterator[Problem]:
    for n, name in enumerate(zone.get("actions", [])):
        if name not in actions:
            yield Problem("zone.json", f"$.actions[{n}]", f"action {name!r} is not added by any module in "
                          "GAIA_ACTION_MODULES (built-in actions are never listed)")


def action_problems(content: Any, actions: Mapping[str, ActionCheck | None]) -> list[Problem]:
    """What the offered actions' own checks find in the content (a failing check is a problem too, never a crash)."""
    found = []
    for name in content.actions:
        check = actions.get(name)
        if check is None:
            continue
        try:
            found += [Problem(file, path, message) for file, path, message in check(content)]
        except Exception as exc:  # noqa: BLE001 - a game's check that fails is reported, not raised
            found.append(Problem("zone.json", "$.actions", f"the check of action {name!r} failed: "
                                                         f"{type(exc).__name__}: {exc}"))
    return found
