"""kb's actions offered to a model as one tool (`act`), built from the action schema kb validates with."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import ValidationError

from shared.schemas.actions import ADDED
from shared.schemas.messages import ACTION_REQUIRES, ACTIONS, ActionArgsSchema, action_args_schema

log = logging.getLogger(__name__)
TOOL_NAME = "act"
MAX_ID, MAX_SAID = 32, 120
MAX_TOKENS = 120  # room for a whole call at those lengths
# What a model returns is read only this far: longer arguments, or deeper nesting, are nonsense (never parsed
# into a RecursionError, never held in memory at any size the endpoint sends).
MAX_ARGUMENT_CHARS = 1000
MAX_DEPTH = 2
_ARGS = ActionArgsSchema()
ABOUT = {
    "action": "what the player does",
    "instance_id": "the item, by the id or name listed in the scene",
    "destination": "an exit of the player's area (go), or a spot to drop on",
    "npc_id": "who the player talks to or gives to (an id listed in the scene, or 'anyone')",
    "target_user_id": "another player, to give an item to",
    "message": "what the player says (talk)",
}


def action_parameters(actions: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON schema of an action's arguments, from ActionArgsSchema, with `action` one of `actions`.

    Strings are held shorter than kb allows (MAX_ID, MAX_SAID): a small model under a grammar otherwise
    fills an id with prose until its token budget runs out.
    """
    plugin = MarshmallowPlugin()
    APISpec(title="gaia actions", version="1", openapi_version="3.1.0", plugins=[plugin])
    assert plugin.converter is not None  # set by APISpec above
    schema = plugin.converter.schema2jsonschema(action_args_schema())  # with the added actions' own arguments
    allowed = [a for a in ACTIONS if a in set(actions)] if actions else list(ACTIONS)
    properties: dict[str, Any] = {}
    for name, spec in schema["properties"].items():
        if "maxLength" in spec:
            spec = {**spec, "maxLength": min(spec["maxLength"], MAX_SAID if name == "message" else MAX_ID)}
        properties[name] = {**spec, "description": ABOUT.get(name, spec.get("description", name))}
    properties["action"]["enum"] = allowed
    needs = ", ".join(f"{a} needs {' and '.join(ACTION_REQUIRES[a])}" for a in allowed if ACTION_REQUIRES[a])
    properties["action"]["description"] += f" ({needs})" if needs else ""
    properties["action"]["description"] += "".join(f"; {a}: {ADDED[a].description}" for a in allowed if a in ADDED)
    shared_needs = set.intersection(*(set(ACTION_REQUIRES[a]) for a in allowed)) if allowed else set()
    required = ["action", *sorted(shared_needs)]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def act_tool(actions: Iterable[str] = ()) -> dict[str, Any]:
    """The chat-completions `tools` entry for kb's actions."""
    return {"type": "function", "function": {
        "name": TOOL_NAME,
        "description": "Do one thing in the game world for the player; the world decides whether it works.",
        "parameters": action_parameters(actions)}}


def forced_choice() -> dict[str, Any]:
    """`tool_choice` that makes the model call `act` (a grammar-constrained answer on llama.cpp's server)."""
    return {"type": "function", "function": {"name": TOOL_NAME}}


def _depth(value: Any, limit: int, depth: int = 0) -> bool:
    """True when `value` nests no deeper than `limit` (an action's arguments are flat)."""
    if depth > limit:
        return False
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return all(_depth(child, limit, depth + 1) for child in children)


def proposal(arguments: Any, actions: Iterable[str] = ()) -> dict[str, Any] | None:
    """The action a tool call proposes, checked against the action schema; None for nonsense."""
    if not isinstance(arguments, str) or len(arguments) > MAX_ARGUMENT_CHARS:
        log.info("model proposed no valid action (%s)", "too long" if isinstance(arguments, str) else "no text")
        return None
    try:
        raw = json.loads(arguments, strict=False)  # a raw newline inside a string is still an answer
        args = _ARGS.load(raw) if isinstance(raw, dict) and _depth(raw, MAX_DEPTH) else None
    except (ValueError, ValidationError, RecursionError) as exc:
        log.info("model proposed no valid action (%s): %.200r", type(exc).__name__, arguments)
        return None
    allowed = set(actions) or set(ACTIONS)
    if args is None or args["action"] not in allowed:
        return None
    return {k: v for k, v in args.items() if v != ""}
