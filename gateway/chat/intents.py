"""Turning a chat line ("take dream bottle") into a kb action, for the legacy SSE chat route."""
from __future__ import annotations

import functools
import re
from typing import Any, Iterable

from shared.schemas.actions import ADDED, PLACEHOLDER

ANYONE = "anyone"
_ARTICLES = re.compile(r"^(the|a|an|some|my)\s+", re.IGNORECASE)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?:give|hand|offer)\s+(?P<item>.+?)\s+to\s+(?P<who>.+)$"), "give_item"),
    (re.compile(r"^(?:take|get|grab|collect|pick up|pick)\s+(?P<item>.+?)(?:\s+up)?$"), "collect_item"),
    (re.compile(r"^(?:drop|put down|leave|place)\s+(?P<item>.+?)(?:\s+(?:on|onto)\s+(?P<spot>.+))?$"), "drop_item"),
    (re.compile(r"^(?:go|walk|run|head|move|enter)\s+(?:to\s+|into\s+|towards\s+)?(?P<place>.+)$"), "go"),
    (re.compile(r"^(?:look around|look at|look|examine|inspect|check)(?:\s+(?:at\s+)?(?P<item>.+))?$"), "examine"),
    (re.compile(r"^(?:i|inv|inventory|what am i carrying\??|what do i have\??)$"), "inventory"),
    (re.compile(r"^(?:use|open|uncork|turn|plant)\s+(?P<item>.+)$"), "use_item"),
    (re.compile(r"^(?:talk|speak|chat)\s+(?:to|with)\s+(?P<who>\w+)(?:\s+(?:about\s+)?(?P<said>.+))?$"), "talk"),
    (re.compile(r"^(?:ask)\s+(?P<who>\w+)\s+(?:about\s+)?(?P<said>.+)$"), "talk"),
    (re.compile(r"^(?:say|tell)\s+(?P<said>.+?)(?:\s+to\s+(?P<who>\w+))?$"), "talk"),
]


def _clean(text: str | None) -> str:
    """Strip punctuation at the ends and a leading article."""
    return _ARTICLES.sub("", (text or "").strip().strip(".!?,")).strip()


def parse_intent(message: str, added: Iterable[str] = ()) -> dict[str, Any]:
    """The action a chat line names; anything else is said to whoever is nearby (`talk`)."""
    return match_intent(message, added) or {"action": "talk", "npc_id": ANYONE, "message": " ".join(message.split())}


def match_intent(message: str, added: Iterable[str] = ()) -> dict[str, Any] | None:
    """The action a chat line names, or None when no rule knows the line (a model may then propose one).

    `added`: the experience's added actions, whose verbs come first ("open the chest" is the game's `open`
    where it has one, and use_item elsewhere).
    """
    lowered = " ".join(message.strip().split()).lower().rstrip(".!?")
    for name in added:
        for verb in _verbs(name):
            if match := verb.match(lowered):
                return {"action": name, **{arg: _clean(text) for arg, text in match.groupdict().items()}}
    for pattern, action in _PATTERNS:
        match = pattern.match(lowered)
        if match:
            return _build(action, match.groupdict())
    return None


@functools.cache
def _verbs(name: str) -> tuple[re.Pattern[str], ...]:
    """An added action's verbs as patterns: "craft {instance_id} with {with_id}" -> named groups."""
    spec = ADDED.get(name)
    return tuple(re.compile("^" + "".join(f"(?P<{part}>.+?)" if n % 2 else _literal(part)
                                          for n, part in enumerate(PLACEHOLDER.split(verb.lower().strip()))) + "$")
                 for verb in (spec.verbs if spec else ()))


def _literal(words: str) -> str:
    """The words between a verb's arguments, any run of spaces matching any run of spaces."""
    return r"\s+".join(re.escape(word) for word in re.split(r"\s+", words))


def _build(action: str, groups: dict[str, str | None]) -> dict[str, Any]:
    args: dict[str, Any] = {"action": action}
    if groups.get("item"):
        args["instance_id"] = _clean(groups["item"])
    if groups.get("place"):
        args["destination"] = _clean(groups["place"])
    if groups.get("spot"):
        args["destination"] = _clean(groups["spot"]).replace(" ", "_")
    if action == "give_item":
        args["npc_id"] = _clean(groups["who"])
    if action == "talk":
        args["npc_id"] = _clean(groups.get("who")) or ANYONE
        args["message"] = _clean(groups.get("said"))
    return args
