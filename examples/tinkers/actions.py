"""Tinker's Cellar's added actions, as both services import them (GAIA_ACTION_MODULES=examples.tinkers.actions).

Only declarations: the gateway validates frames with them, its chat knows their verbs, its narrator
their descriptions. The rules are named, not imported: kb alone imports examples/tinkers/rules.py.
"""
from __future__ import annotations

from marshmallow import fields, validate

from shared.schemas.actions import ActionSpec

RULES = "examples.tinkers.rules"

ACTIONS = (
    ActionSpec(name="open", rule=f"{RULES}:open_container", requires=("instance_id",),
               description="open a container lying in your area: what it holds is laid out beside it",
               verbs=("open {instance_id}", "unlock {instance_id}", "look inside {instance_id}")),
    ActionSpec(name="close", rule=f"{RULES}:close_container", requires=("instance_id",),
               description="close a container: the loose things lying beside it go back in",
               verbs=("close {instance_id}", "shut {instance_id}")),
    ActionSpec(name="craft", rule=f"{RULES}:craft", requires=("instance_id", "with_id"),
               description="make one thing of two items you carry (with_id: the second item)",
               arguments={"with_id": fields.String(validate=validate.Length(min=1, max=128),
                                                   metadata={"description": "the second item, by id or name"})},
               verbs=("craft {instance_id} with {with_id}", "combine {instance_id} with {with_id}",
                      "combine {instance_id} and {with_id}", "fit {instance_id} to {with_id}"),
               check=f"{RULES}:check_recipes"),
)
