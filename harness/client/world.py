"""A client's local copy of the world, kept current by applying deltas in version order."""
from __future__ import annotations

import copy
from typing import Any


class LocalWorld:
    """Applies area_of_interest snapshots and world_update deltas exactly as a game client should."""

    def __init__(self) -> None:
        self.view: dict[str, Any] | None = None
        self.version = -1
        self.applied: list[tuple[int, int]] = []
        self.gaps = 0
        self.snapshots = 0
        self.roster: dict[str, str] = {}  # who is present -> their area, from snapshots and presence frames

    def apply(self, frame: dict[str, Any]) -> None:
        """Feed any server frame; snapshots and deltas change the view, the rest is ignored."""
        if frame.get("type") == "area_of_interest":
            self.view = copy.deepcopy({k: v for k, v in frame.items() if k != "type"})
            self.version = frame["snapshot_version"]
            self.snapshots += 1
            self.roster = {p["user_id"]: p["area_id"] for p in frame.get("players", [])}
        elif frame.get("type") == "world_update" and self.view is not None:
            self._apply_update(frame)
        elif frame.get("type") == "presence":
            self._apply_presence(frame)
        elif frame.get("type") == "presence_batch":
            for change in frame["changes"]:
                self._apply_presence(change)

    def _apply_presence(self, change: dict[str, Any]) -> None:
        if change["event"] == "leave":
            self.roster.pop(change["user_id"], None)
        else:
            self.roster[change["user_id"]] = change["area_id"]

    def _apply_update(self, event: dict[str, Any]) -> None:
        if event["snapshot_version"] <= self.version:
            return  # already contained in our snapshot
        if event["base_version"] != self.version:
            self.gaps += 1  # a delta we cannot apply: the caller should ask for get_state
            return
        for change in event["changes"]:
            apply_change(self.view, change)  # type: ignore[arg-type]
        self.applied.append((event["base_version"], event["snapshot_version"]))
        self.version = event["snapshot_version"]
        self.view["snapshot_version"] = self.version  # type: ignore[index]

    def comparable(self) -> dict[str, Any]:
        """The view normalised for comparison with kb's (item order inside a spot does not matter)."""
        return normalise(self.view or {})


def _collection(view: dict[str, Any], change: dict[str, Any]) -> list[dict[str, Any]] | None:
    if change.get("area_id") is None:
        return view["player"]["inventory"] if change.get("path") == "player.inventory" else None
    spot = view["areas"].get(change["area_id"], {}).get("spots", {}).get(change.get("spot_id"))
    return spot["items"] if spot is not None else None


def _set_path(view: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    target = view
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = copy.deepcopy(value)


def apply_change(view: dict[str, Any], change: dict[str, Any]) -> None:
    """Apply one delta of a WorldUpdateEvent to an area_of_interest-shaped view."""
    op = change["operation"]
    items = _collection(view, change)
    if op == "add" and items is not None:
        items.append(copy.deepcopy(change.get("item") or change.get("value")))
    elif op == "remove" and items is not None:
        items[:] = [i for i in items if i["instance_id"] != change["instance_id"]]
    elif op == "update" and change.get("instance_id") and items is not None:
        items[:] = [copy.deepcopy(change["item"]) if i["instance_id"] == change["instance_id"] else i for i in items]
    elif op == "update":
        _set_path(view, change["path"], change.get("value"))


def normalise(view: dict[str, Any]) -> dict[str, Any]:
    """Sort item lists by instance id and drop the frame type and roster, so two views compare by content.

    The roster is presence, which moves with sessions rather than world versions: it is checked
    by the presence tests, not by version convergence.
    """
    out = copy.deepcopy({k: v for k, v in view.items() if k not in ("type", "players")})
    for area in out.get("areas", {}).values():
        for spot in area.get("spots", {}).values():
            spot["items"].sort(key=lambda i: i["instance_id"])
    if "player" in out:
        out["player"]["inventory"].sort(key=lambda i: i["instance_id"])
    return out
