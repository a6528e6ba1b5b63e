"""The action registry: the eight built-in actions and those a game adds (GAIA_ACTION_MODULES), known to both services.

A game's module (named in GAIA_ACTION_MODULES, imported by the gateway and by kb at start) holds
`ACTIONS`, a sequence of ActionSpec. The gateway validates frames with each spec's arguments, offers
its verbs to the intent parser and its description to the narrator's tool; kb alone imports its rule
(`rule` is a "module:function" reference, so the gateway never imports a game's world code). docs/authoring.md.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from marshmallow import fields

# What the built-in actions cannot do without, and what they do (the docs and the narrator's tool read these).
BUILT_IN: dict[str, tuple[tuple[str, ...], str]] = {
    "collect_item": (("instance_id",), "take an item lying in your area into your inventory"),
    "drop_item": (("instance_id",), "put an item you carry on a spot of your area (destination: the spot)"),
    "go": (("destination",), "walk to a neighbouring area"),
    "examine": ((), "describe your area, an item or an NPC (read-only)"),
    "inventory": ((), "list what you carry (read-only)"),
    "give_item": (("instance_id",), "give an item to an NPC who wants it, or to a player in your area"),
    "talk": (("npc_id",), "talk to an NPC in your area, or to anyone (read-only)"),
    "use_item": (("instance_id",), "use an item you carry: its template says what happens"),
}
SHARED_ARGUMENTS = ("instance_id", "destination", "npc_id", "target_user_id", "message")
RESERVED_ARGUMENTS = ("action", "type", "id", "user_id", "trace_id")  # the frame's and kb's request's own fields
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PLACEHOLDER = re.compile(r"\{(\w+)\}")

# Filled at start (load_modules), read-only afterwards. Lists and dicts that grow in place, so every module that
# imported them (shared/schemas/messages.py's ACTIONS and ACTION_REQUIRES) sees the added actions.
NAMES: list[str] = list(BUILT_IN)
REQUIRES: dict[str, tuple[str, ...]] = {name: needs for name, (needs, _) in BUILT_IN.items()}
ADDED: dict[str, "ActionSpec"] = {}


class ActionError(ValueError):
    """A module named in GAIA_ACTION_MODULES, or one of its actions, that cannot be registered."""


@dataclass(frozen=True)
class ActionSpec:
    """An action a game adds: its name, arguments, rule (kb), verbs (chat) and description (narrator)."""

    name: str
    rule: str  # "package.module:function" with the built-in rules' signature; imported by kb only
    description: str  # one line: the narrator's tool and the API documents show it
    requires: tuple[str, ...] = ()  # the arguments it cannot do without (shared or its own)
    arguments: Mapping[str, fields.Field] = field(default_factory=dict)  # its own, beyond SHARED_ARGUMENTS
    verbs: tuple[str, ...] = ()  # chat phrasings, e.g. "open {instance_id}", "craft {instance_id} with {with_id}"
    check: str = ""  # optional "module:function": content -> problems of the action's own data (gaia-kb check)
    module: str = ""  # set on registration: the module that added it

    def problems(self) -> list[str]:
        """What keeps this spec from being registered (empty: nothing)."""
        found = []
        if not NAME.match(self.name):
            found.append("a name is lower-case letters, digits and _ (at most 64), starting with a letter")
        if self.name in BUILT_IN:
            found.append("is a built-in action")
        for ref, what in ((self.rule, "rule"), (self.check, "check")):
            if (ref or what == "rule") and not REFERENCE.match(ref):
                found.append(f"{what} must be 'package.module:function', not {ref!r}")
        if not self.description.strip():
            found.append("needs a one-line description (the narrator's tool shows it)")
        for name in self.arguments:
            if name in SHARED_ARGUMENTS or name in RESERVED_ARGUMENTS or not NAME.match(name):
                found.append(f"argument {name!r} is taken or not a valid name")
        known = set(SHARED_ARGUMENTS) | set(self.arguments)
        found += [f"requires unknown argument {name!r}" for name in self.requires if name not in known]
        for verb in self.verbs:
            if not verb.strip() or verb.lstrip().startswith("{"):
                found.append(f"verb {verb!r} must start with a word")
            found += [f"verb {verb!r} names unknown argument {name!r}" for name in PLACEHOLDER.findall(verb)
                      if name not in known]
        return found


def register(spec: ActionSpec, module: str = "") -> None:
    """Add one action; the same spec twice is a no-op, another one under a taken name an ActionError."""
    spec = ActionSpec(**{**spec.__dict__, "module": module or spec.module})
    if (problems := spec.problems()):
        raise ActionError(f"action {spec.name!r} of {module or 'a module'}: " + "; ".join(problems))
    known = ADDED.get(spec.name)
    if known is not None:
        if known != spec:
            raise ActionError(f"action {spec.name!r} of {module} is already added by {known.module}")
        return
    ADDED[spec.name] = spec
    NAMES.append(spec.name)
    REQUIRES[spec.name] = spec.requires


def load_modules(names: Iterable[str]) -> list[ActionSpec]:
    """Import each module and register its ACTIONS; the specs of these modules, in order."""
    specs = []
    for module_name in names:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the module's, reported with its name
            raise ActionError(f"GAIA_ACTION_MODULES: cannot import {module_name!r}: {type(exc).__name__}: {exc}") \
                from exc
        declared = getattr(module, "ACTIONS", None)
        if not isinstance(declared, (list, tuple)) or not all(isinstance(s, ActionSpec) for s in declared):
            raise ActionError(f"GAIA_ACTION_MODULES: {module_name!r} has no ACTIONS (a sequence of ActionSpec)")
        for spec in declared:
            register(spec, module_name)
            specs.append(ADDED[spec.name])
    return specs


def resolve(reference: str) -> Callable[..., Any]:
    """The function a "module:function" reference names (kb resolves rules and checks with it)."""
    module_name, _, attribute = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # noqa: BLE001 - reported with the reference that failed
        raise ActionError(f"cannot import {reference!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(found):
        raise ActionError(f"{reference!r} is not a function")
    return found


def description(name: str) -> str:
    """What an action does, in one line."""
    return BUILT_IN[name][1] if name in BUILT_IN else ADDED[name].description
