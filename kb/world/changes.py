"""The deltas rules report, each with who may see it: what built-in and added rules build their changes from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVENTORY = "player.inventory"


@dataclass(frozen=True)
class ScopedChange:
    """A delta plus who may see it: one player only, or anyone who can see its areas."""

    change: dict[str, Any]
    private_to: str | None = None
    areas: tuple[str, ...] = ()


def inventory_add(user_id: str, item: dict[str, Any]) -> ScopedChange:
    """An item enters a player's inventory (only that player sees it)."""
    return ScopedChange({"operation": "add", "area_id": None, "path": INVENTORY, "instance_id": item["instance_id"],
                         "template_id": item["template_id"], "item": item}, private_to=user_id)


def inventory_remove(user_id: str, instance_id: str) -> ScopedChange:
    """An item leaves a player's inventory."""
    return ScopedChange({"operation": "remove", "area_id": None, "path": INVENTORY, "instance_id": instance_id},
                        private_to=user_id)


def inventory_update(user_id: str, item: dict[str, Any]) -> ScopedChange:
    """An inventory item's new state."""
    return ScopedChange({"operation": "update", "area_id": None, "path": INVENTORY, "instance_id": item["instance_id"],
                         "item": item}, private_to=user_id)


def spot_add(area_id: str, spot_id: str, item: dict[str, Any]) -> ScopedChange:
    """An item appears on a spot (seen by whoever may see that area)."""
    return ScopedChange({"operation": "add", "area_id": area_id, "spot_id": spot_id, "instance_id": item["instance_id"],
                         "template_id": item["template_id"], "item": item}, areas=(area_id,))


def spot_remove(area_id: str, spot_id: str, instance_id: str) -> ScopedChange:
    """An item leaves a spot."""
    return ScopedChange({"operation": "remove", "area_id": area_id, "spot_id": spot_id, "instance_id": instance_id},
                        areas=(area_id,))


def spot_update(area_id: str, spot_id: str, item: dict[str, Any]) -> ScopedChange:
    """An item's new state where it lies (the path names its spot's items; clients replace it by instance id)."""
    return ScopedChange({"operation": "update", "area_id": area_id, "spot_id": spot_id,
                         "path": f"areas.{area_id}.spots.{spot_id}.items", "instance_id": item["instance_id"],
                         "item": item}, areas=(area_id,))
