"""The compiled loads give marshmallow's answer: the same dict, key for key and in order, for every valid
message, and marshmallow's own error for every broken one (thousands of mutations of real events)."""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
from marshmallow import Schema, ValidationError

from shared.schemas.events import BROADCAST_SCHEMAS, STREAM_EVENT_SCHEMAS
from shared.schemas.fastload import fast_load
from tests.helpers import EVENT

BROADCAST = {**{k: v for k, v in EVENT.items() if k != "user_id"}, "audience": [None, {"only": ["u1", "u2"]}]}
SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("world_update", BROADCAST),
    ("world_update", {**BROADCAST, "changes": [{"operation": "update", "area_id": "hall", "path": "weather",
                                                 "value": {"sky": ["grey", 1, None]}}], "audience": [None]}),
    ("world_update", {k: v for k, v in BROADCAST.items() if k != "metadata"}),  # a default filled in
    ("presence", {"type": "presence", "event": "move", "user_id": "u1", "experience": "e", "area_id": "hall",
                  "timestamp": 5}),
    ("presence_batch", {"type": "presence_batch", "experience": "e", "timestamp": 5,
                        "changes": [{"event": "join", "user_id": "u1", "area_id": None},
                                    {"event": "leave", "user_id": "u2"}]}),
]
ODD: list[Any] = [None, True, False, 0, -1, 7, 1.5, "", "x", "x" * 200, [], {}, [None], {"a": 1}, b"b", "12"]


def places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index inside a message, depth first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*path, key)
            yield from places(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield (*path, index)
            yield from places(inner, (*path, index))


def mutations(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The message itself, then each place removed, given each odd value, and each object given an extra key."""
    yield message
    for path in places(message):
        for odd in [*ODD, "remove"]:
            changed = copy.deepcopy(message)
            parent = changed
            for step in path[:-1]:
                parent = parent[step]
            if odd == "remove":
                del parent[path[-1]]
            else:
                parent[path[-1]] = odd
            yield changed
        changed = copy.deepcopy(message)
        parent = changed
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict):
            parent["unknown_extra"] = 1
            yield changed


def outcome(load: Any, message: Any) -> tuple[str, Any]:
    try:
        return "loaded", repr(load(copy.deepcopy(message)))  # values, types and key order
    except ValidationError as err:
        return "refused", err.messages


@pytest.mark.parametrize("schemas", [BROADCAST_SCHEMAS, STREAM_EVENT_SCHEMAS], ids=["broadcast", "stream"])
def test_every_mutation_of_real_events_loads_or_fails_as_marshmallow_says(schemas: dict[str, Schema]) -> None:
    seen = {"loaded": 0, "refused": 0}
    for kind, sample in SAMPLES:
        schema = schemas[kind]
        message = sample if schemas is BROADCAST_SCHEMAS or kind != "world_update" else \
            {**{k: v for k, v in sample.items() if k != "audience"}, "user_id": "u1"}
        for changed in mutations(message):
            expected = outcome(schema.load, changed)
            assert outcome(fast_load(schema), changed) == expected, changed
            seen[expected[0]] += 1
    assert seen["loaded"] > 100 and seen["refused"] > 500  # both sides of the line were walked


def test_the_protocols_schemas_are_compiled_not_handed_back() -> None:
    for schema in [*BROADCAST_SCHEMAS.values(), *STREAM_EVENT_SCHEMAS.values()]:
        assert fast_load(schema) != schema.load, type(schema).__name__
