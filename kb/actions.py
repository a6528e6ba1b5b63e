"""The actions games add (GAIA_ACTION_MODULES) as kb runs them: rules resolved at start, and each call guarded.

An added rule is decided exactly where a built-in one is (WorldService._commit: one commit, its events,
the experience's visibility); what it returns is checked first, so a game's bug refuses one action
instead of failing the request or writing a broken event.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from kb.world.content import Content
from kb.world.contentcheck import ActionCheck
from kb.world.model import World
from kb.world.rules import RULES, Outcome, Rule, apply_action, fail
from shared.schemas.actions import ADDED, load_modules, resolve
from shared.schemas.events import ChangeSchema

log = logging.getLogger(__name__)
_CHANGES = ChangeSchema(many=True)
FAILED = "That did not work."  # what a player hears when a game's rule failed (the log has the why)


@dataclass(frozen=True)
class AddedActions:
    """The added actions of this process: each one's rule and its content check (if it has one)."""

    rules: dict[str, Rule] = field(default_factory=dict)
    checks: dict[str, ActionCheck | None] = field(default_factory=dict)

    @classmethod
    def load(cls, modules: tuple[str, ...]) -> "AddedActions":
        """Import the modules (ActionError when one is wrong) and each of their actions' rule and check."""
        specs = load_modules(modules)
        return cls({s.name: resolve(s.rule) for s in specs},
                   {s.name: resolve(s.check) if s.check else None for s in specs})

    def decide(self, content: Content, world: World, user_id: str, args: dict[str, Any], now_ms: int) -> Outcome:
        """The outcome of one action: a built-in rule, or the experience's added one, guarded."""
        name = args["action"]
        if name in RULES:
            return apply_action(content, world, user_id, args, now_ms)
        rule = self.rules.get(name) if name in content.actions else None
        if rule is None:
            return fail(f"Nobody can {name} here.")
        try:
            outcome = rule(content, world, user_id, args, now_ms)
        except Exception:  # noqa: BLE001 - a game's rule that raises refuses its action; the log keeps the trace
            log.exception("added action %s (%s) failed for %s", name, ADDED[name].module, user_id)
            return fail(FAILED)
        problem = _problem(outcome, world)
        if problem:
            log.error("added action %s (%s) returned %s; refused", name, ADDED[name].module, problem)
            return fail(FAILED)
        return outcome


def _problem(outcome: Any, world: World) -> str:
    """What is wrong with an added rule's result ("" when nothing is)."""
    if not isinstance(outcome, Outcome):
        return f"a {type(outcome).__name__}, not an Outcome"
    if outcome.world is world:
        return "the world it was given (changed in place?): copy what you change with edit() or edit_player()"
    if outcome.world is None and outcome.changes:
        return "changes without a new world"
    try:
        _CHANGES.load([c.change for c in outcome.changes])
    except (ValidationError, AttributeError, TypeError) as exc:
        return f"changes that are not protocol changes: {exc}"
    return ""
