"""What the model sees: the player's line, the last turns, where the player stands, and what kb decided."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

NARRATE = (
    "You are the narrator of a text adventure. Write two or three short sentences in the second person "
    "about what just happened to the player. The world has already decided the outcome: tell exactly that "
    "outcome and never invent items, places or changes that are not in the scene.")
PROPOSE = (
    "You turn a player's line into one action in a text adventure. Call the act tool with the action that "
    "best matches the line, using only ids listed in the scene.")
Message = dict[str, str]


@dataclass
class Scene:
    """One chat line and everything the model is told about it."""

    user_id: str
    line: str
    view: dict[str, Any] | None = None  # kb's area_of_interest for the player (None: kb could not say)
    turns: Sequence[tuple[str, str]] = ()  # (what the player said, what the narrator answered), oldest first
    action: dict[str, Any] | None = None  # the action kb was asked to do
    result: dict[str, Any] | None = None  # kb's answer: success, message, changes


def _names(items: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{i.get('semantic_name', i['instance_id'])} ({i['instance_id']})" for i in items) or "nothing"


def describe(view: dict[str, Any] | None, user_id: str) -> str:
    """Where the player stands, in plain lines: area, exits, items, NPCs, other players, inventory."""
    if not view:
        return "The scene is unknown right now."
    player = view.get("player", {})
    here = player.get("current_area", "")
    area = view.get("areas", {}).get(here, {})
    lines = [f"Place: {area.get('name', here)} ({here}). {area.get('description', '')}".strip()]
    exits = area.get("exits") or []
    if exits:
        lines.append("Exits: " + ", ".join(exits) + ".")
    for spot_id, spot in (area.get("spots") or {}).items():
        if spot.get("items"):
            lines.append(f"On the {spot.get('name', spot_id)} ({spot_id}): {_names(spot['items'])}.")
    npcs = [f"{n.get('name', i)} ({i})" for i, n in (view.get("npcs") or {}).items() if n.get("area_id") == here]
    if npcs:
        lines.append("Characters here: " + ", ".join(npcs) + ".")
    others = [p["user_id"] for p in view.get("players") or [] if p.get("area_id") == here and p["user_id"] != user_id]
    if others:
        lines.append("Other players here: " + ", ".join(others) + ".")
    lines.append(f"The player carries: {_names(player.get('inventory') or [])}.")
    return "\n".join(lines)


def outcome(action: dict[str, Any] | None, result: dict[str, Any] | None) -> str:
    """What kb decided, as the model is told it."""
    if result is None:
        return "Nothing happened in the world: the line was not an action the world could do."
    did = ", ".join(f"{k}={v}" for k, v in (action or {}).items()) or "nothing"
    verdict = "It worked." if result.get("success") else "It did not work; nothing changed."
    return f"Action: {did}. {verdict} The world says: {result.get('message', '')}"


def _history(turns: Sequence[tuple[str, str]]) -> list[Message]:
    out: list[Message] = []
    for said, answered in turns:
        out += [{"role": "user", "content": said}, {"role": "assistant", "content": answered}]
    return out


def narrate_messages(scene: Scene) -> list[Message]:
    """The chat-completions messages for the narrative of a committed (or refused) action."""
    facts = f"{describe(scene.view, scene.user_id)}\n{outcome(scene.action, scene.result)}"
    return [{"role": "system", "content": NARRATE}, *_history(scene.turns),
            {"role": "user", "content": f"{facts}\nThe player said: {scene.line}\nNarrate what happened."}]


def propose_messages(scene: Scene) -> list[Message]:
    """The chat-completions messages that ask for an action (offered as the `act` tool)."""
    return [{"role": "system", "content": PROPOSE}, *_history(scene.turns),
            {"role": "user", "content": f"{describe(scene.view, scene.user_id)}\nThe player said: {scene.line}"}]
