"""The action registry both services load (GAIA_ACTION_MODULES): what a game may add, and frames checked by it."""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
from marshmallow import fields

import examples
from shared.schemas import actions
from shared.schemas.actions import ActionError, ActionSpec, load_modules, register
from shared.schemas.errors import ErrorCode, ProtocolError
from shared.schemas.kbapi import ActionRequestSchema
from shared.schemas.messages import ACTION_REQUIRES, ACTIONS, parse_client_message

ROOT = Path(__file__).resolve().parents[2]


def frame(**fields_: object) -> bytes:
    import orjson
    return orjson.dumps({"type": "action", "id": 1, **fields_})


def test_authoring_the_examples_actions_are_registered_after_the_built_in_ones() -> None:
    specs = load_modules(examples.ACTION_MODULES)
    assert [s.name for s in specs] == ["open", "close", "craft"] and ACTIONS[:8] == list(actions.BUILT_IN)
    assert ACTIONS[-3:] == ["open", "close", "craft"] and ACTION_REQUIRES["craft"] == ("instance_id", "with_id")
    assert load_modules(examples.ACTION_MODULES) == specs and ACTIONS.count("open") == 1, "loading twice: a no-op"
    assert all(s.module == "examples.tinkers.actions" for s in specs)


def test_authoring_an_added_actions_frame_is_checked_with_its_own_arguments() -> None:
    load_modules(examples.ACTION_MODULES)
    message = parse_client_message(frame(action="craft", instance_id="brass gear", with_id="coiled spring", x=1))
    assert message == {"type": "action", "id": 1, "action": "craft", "instance_id": "brass gear",
                       "with_id": "coiled spring"}
    for bad, details in ((frame(action="craft", instance_id="a"), {"with_id": ["Missing data for required field."]}),
                         (frame(action="craft", instance_id="a", with_id=7), {"with_id": ["Not a valid string."]}),
                         (frame(action="open"), {"instance_id": ["Missing data for required field."]})):
        with pytest.raises(ProtocolError) as raised:
            parse_client_message(bad)
        assert raised.value.code == ErrorCode.INVALID_MESSAGE and raised.value.details == details
    assert "with_id" not in parse_client_message(frame(action="go", destination="x", with_id="y")), "craft's own only"
    body = ActionRequestSchema().load({"action": "craft", "instance_id": "a", "with_id": "b", "user_id": "ann"})
    assert body["with_id"] == "b", "kb's request carries the added arguments too"


@pytest.mark.parametrize("spec,problem", [
    (ActionSpec(name="Open", rule="m:f", description="d"), "a name is lower-case"),
    (ActionSpec(name="go", rule="m:f", description="d"), "is a built-in action"),
    (ActionSpec(name="dig", rule="m.f", description="d"), "rule must be 'package.module:function'"),
    (ActionSpec(name="dig", rule="m:f", description=" "), "needs a one-line description"),
    (ActionSpec(name="dig", rule="m:f", description="d", arguments={"instance_id": fields.String()}),
     "argument 'instance_id' is taken"),
    (ActionSpec(name="dig", rule="m:f", description="d", arguments={"user_id": fields.String()}),
     "argument 'user_id' is taken"),
    (ActionSpec(name="dig", rule="m:f", description="d", requires=("shovel",)), "requires unknown argument 'shovel'"),
    (ActionSpec(name="dig", rule="m:f", description="d", verbs=("{instance_id} dig",)), "must start with a word"),
    (ActionSpec(name="dig", rule="m:f", description="d", verbs=("dig {spade}",)), "names unknown argument 'spade'"),
])
def test_authoring_a_spec_that_cannot_work_is_refused_at_start_with_its_reason(spec: ActionSpec, problem: str) -> None:
    with pytest.raises(ActionError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        register(spec, "a.game")
    assert spec.name not in actions.ADDED


def test_authoring_a_taken_name_an_unimportable_module_or_one_without_actions_stops_the_start(monkeypatch) -> None:
    load_modules(examples.ACTION_MODULES)
    with pytest.raises(ActionError, match="'open' of other.game is already added by examples.tinkers.actions"):
        register(ActionSpec(name="open", rule="other.game:open", description="d"), "other.game")
    with pytest.raises(ActionError, match="cannot import 'no.such.game'"):
        load_modules(["no.such.game"])
    monkeypatch.setitem(sys.modules, "empty_game", types.ModuleType("empty_game"))
    with pytest.raises(ActionError, match="'empty_game' has no ACTIONS"):
        load_modules(["empty_game"])


def test_authoring_a_games_declarations_import_nothing_of_kb_so_the_gateway_never_loads_world_code() -> None:
    tree = ast.parse((ROOT / "examples" / "tinkers" / "actions.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "marshmallow", "shared.schemas.actions"}, imported
    rules = {s.rule.split(":")[0] for s in load_modules(examples.ACTION_MODULES)}
    assert rules == {"examples.tinkers.rules"}, "named by a string: kb alone imports it"
