"""Static content of an experience (zone, templates, NPC dialogue) loaded from data files."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
VISIBILITIES = ("global", "location", "none")


class ContentError(ValueError):
    """Data files that do not describe a playable experience."""


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


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ContentError(f"cannot read {path}: {exc}") from exc


def load_content(experience: str, data_dir: Path | None = None) -> Content:
    """Read zone.json, items.json and npcs.json of one experience and check they agree."""
    root = (data_dir or DATA_DIR) / experience
    zone, items, npcs = _read(root / "zone.json"), _read(root / "items.json"), _read(root / "npcs.json")
    content = Content(
        experience=experience,
        visibility=zone.get("visibility", "global"),
        zone=zone["zone"],
        start_area=zone["start_area"],
        areas=zone["areas"],
        templates=items["templates"],
        instances=items["instances"],
        npcs=npcs,
        environment=zone.get("environment", {}),
    )
    _check(content)
    return content


def _check(content: Content) -> None:
    """Fail loudly at start-up on content that would break rules later."""
    if content.visibility not in VISIBILITIES:
        raise ContentError(f"visibility must be one of {VISIBILITIES}")
    if content.start_area not in content.areas:
        raise ContentError(f"start_area {content.start_area!r} is not an area")
    for area_id, area in content.areas.items():
        for exit_id in area.get("exits", []):
            if exit_id not in content.areas:
                raise ContentError(f"area {area_id!r} exits to unknown area {exit_id!r}")
    for inst in content.instances:
        if inst["template_id"] not in content.templates:
            raise ContentError(f"item {inst['instance_id']!r} uses unknown template")
        if inst["spot_id"] not in content.areas.get(inst["area_id"], {}).get("spots", {}):
            raise ContentError(f"item {inst['instance_id']!r} is placed on an unknown spot")
    for npc_id, npc in content.npcs.items():
        for area_id in [npc["area_id"], *npc.get("route", [])]:
            if area_id not in content.areas:
                raise ContentError(f"npc {npc_id!r} refers to unknown area {area_id!r}")


def available_experiences(data_dir: Path | None = None) -> list[str]:
    """Names of the experiences that have data files."""
    root = data_dir or DATA_DIR
    return sorted(p.name for p in root.iterdir() if (p / "zone.json").is_file())
