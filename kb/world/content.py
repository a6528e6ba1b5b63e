"""An experience's static content (zone, templates, NPCs) read from its folder, checked whole before it is used.

The format is docs/authoring.md; each file has a JSON Schema in kb/world/schemas/ (contentcheck.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson

from kb.world.contentcheck import FILES, ActionCheck, Problem, action_problems, reference_problems, schema_problems

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
VISIBILITIES = ("global", "location", "none")
# How many clock ticks each environment value waits before it moves on, unless the content says (`every`).
DEFAULT_EVERY = {"weather": 3, "time_of_day": 2}


class ContentError(ValueError):
    """Data files that do not describe a playable experience; `problems` lists every one found."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Content:
    """Everything about an experience that never changes while it runs."""

    experience: str
    visibility: str
    zone: dict[str, Any]
    start_area: str
    areas: dict[str, Any]
    templates: dict[str, Any]
    instances: list[dict[str, Any]]
    npcs: dict[str, Any]
    environment: dict[str, list[str]]
    cycle_every: dict[str, int] = field(default_factory=dict)
    actions: tuple[str, ...] = ()  # the added actions this experience offers (zone.json `actions`)
    fingerprint: str = ""  # of the three files' JSON: a saved world made from other content is migrated
    folder: str = ""  # where it was read from (a reload reads it there again)

    def make_item(self, instance_id: str, template_id: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """An item instance as clients see it, built from its template."""
        tpl = self.templates[template_id]
        return {
            "instance_id": instance_id,
            "template_id": template_id,
            "type": tpl["type"],
            "semantic_name": tpl["semantic_name"],
            "description": tpl["description"],
            "visible": True,
            "state": dict(state or {}),
        }

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        """The placement record of an item instance, if the content defines it."""
        return next((i for i in self.instances if i["instance_id"] == instance_id), None)

    def properties(self, template_id: str) -> dict[str, Any]:
        """A template's free data for the game's own rules (empty when it has none)."""
        return dict(self.templates.get(template_id, {}).get("properties", {}))


def _read(folder: Path, name: str) -> tuple[Any, list[Problem]]:
    """One file's JSON, or the problem that stops it being read."""
    path = folder / name
    try:
        return orjson.loads(path.read_bytes()), []
    except FileNotFoundError:
        return None, [Problem(name, "$", f"missing: every experience has {', '.join(FILES)}")]
    except OSError as exc:
        return None, [Problem(name, "$", f"cannot be read: {exc.strerror or exc}")]
    except orjson.JSONDecodeError as exc:
        return None, [Problem(name, "$", f"not valid JSON: {exc}")]


def check_folder(folder: Path, actions: Mapping[str, ActionCheck | None] | None = None) -> list[Problem]:
    """Every problem of one experience's folder (empty: it loads); `actions` as for load_content."""
    try:
        load_content(folder.name, folder.parent, actions)
    except ContentError as exc:
        return list(exc.problems) or [Problem("zone.json", "$", str(exc))]
    return []


def load_content(experience: str, data_dir: Path | None = None,
                 actions: Mapping[str, ActionCheck | None] | None = None) -> Content:
    """Read and check zone.json, items.json and npcs.json of one experience; ContentError lists every problem.

    `actions`: the added actions this process registered (name -> its content check, or None); the
    content may offer only those. None: the offered actions are not checked (a pure test of the rules).
    """
    folder = (data_dir or DATA_DIR) / experience
    read = {name: _read(folder, name) for name in FILES}
    problems = [p for _, found in read.values() for p in found]
    problems += [p for name, (data, found) in read.items() if not found for p in schema_problems(name, data)]
    zone, items, npcs = (read[name][0] for name in FILES)
    content = None if problems else _content(experience, folder, zone, items, npcs)  # each file has its shape
    problems += _references(zone, items, npcs, actions)
    if content is not None:
        problems += action_problems(content, actions or {})
    if problems or content is None:
        raise ContentError(f"experience {experience!r} ({folder}) has {len(problems)} problem(s):\n  "
                           + "\n  ".join(map(str, sorted(problems))), tuple(sorted(problems)))
    return content


def _references(zone: Any, items: Any, npcs: Any, actions: Mapping[str, ActionCheck | None] | None) -> list[Problem]:
    """The cross-file problems, as far as files with schema problems let them be looked for."""
    if not all(isinstance(data, dict) for data in (zone, items, npcs)):
        return []
    try:
        return reference_problems(zone, items, npcs, actions)
    except (AttributeError, KeyError, TypeError):  # a shape the schema problems already name
        return []


def _content(experience: str, folder: Path, zone: dict[str, Any], items: dict[str, Any],
             npcs: dict[str, Any]) -> Content:
    """The checked files as a Content: NPCs' missing lines and the environment's paces filled in."""
    characters = {npc_id: _with_lines(npc) for npc_id, npc in npcs.items() if npc_id != "$schema"}
    cycles = {key: spec if isinstance(spec, dict) else {"cycle": spec} for key, spec in zone.get("environment",
                                                                                                   {}).items()}
    return Content(
        experience=experience,
        visibility=zone.get("visibility", "global"),
        zone=zone["zone"],
        start_area=zone["start_area"],
        areas=zone["areas"],
        templates=items["templates"],
        instances=items["instances"],
        npcs=characters,
        environment={key: list(spec["cycle"]) for key, spec in cycles.items()},
        cycle_every={key: int(spec.get("every", DEFAULT_EVERY.get(key, 1))) for key, spec in cycles.items()},
        actions=tuple(zone.get("actions", ())),
        fingerprint=hashlib.sha256(orjson.dumps([zone, items, npcs], option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
        folder=str(folder),
    )


def _with_lines(npc: dict[str, Any]) -> dict[str, Any]:
    """An NPC whose dialogue has the lines give_item needs, written for it when the content has none."""
    defaults = {"thanks": f"{npc['name']} takes it gladly.", "decline": f"{npc['name']} does not want that."}
    return {**npc, "dialogue": {**defaults, **npc["dialogue"]}}


def available_experiences(data_dir: Path | None = None) -> list[str]:
    """Names of the experiences that have data files."""
    root = data_dir or DATA_DIR
    return sorted(p.name for p in root.iterdir() if (p / "zone.json").is_file())


def experience_folders(data_dirs: list[Path]) -> dict[str, Path]:
    """Each experience of several data folders -> the folder holding it; one name in two folders is a ContentError."""
    found: dict[str, Path] = {}
    for root in data_dirs:
        for name in available_experiences(root):
            if name in found:
                raise ContentError(f"experience {name!r} is in both {found[name]} and {root}")
            found[name] = root
    return found


def data_dirs(setting: str) -> list[Path]:
    """GAIA_KB_DATA_DIR: folders of experiences, comma-separated; empty: the packaged kb/data."""
    return [Path(part.strip()) for part in setting.split(",") if part.strip()] or [DATA_DIR]
