"""The gateway's side of an added action: its verbs reach the intent parser where it is offered, its arguments and
description the narrator's tool, and the AsyncAPI document lists it."""
from __future__ import annotations

import examples
from gateway.apidocs import asyncapi
from gateway.chat import tools
from gateway.chat.intents import match_intent, parse_intent
from shared.schemas.actions import load_modules

load_modules(examples.ACTION_MODULES)
OFFERED = ("open", "close", "craft")


def test_authoring_an_experiences_added_verbs_come_first_and_only_where_it_offers_them() -> None:
    assert parse_intent("Open the iron chest!", OFFERED) == {"action": "open", "instance_id": "iron chest"}
    assert parse_intent("open the iron chest") == {"action": "use_item", "instance_id": "iron chest"}
    assert parse_intent("combine the brass gear  with a coiled spring", OFFERED) == {
        "action": "craft", "instance_id": "brass gear", "with_id": "coiled spring"}
    assert parse_intent("shut chest", OFFERED) == {"action": "close", "instance_id": "chest"}
    assert match_intent("crafty thoughts with friends", OFFERED) is None, "a verb is a whole word"
    assert parse_intent("take the brass gear", OFFERED) == {"action": "collect_item", "instance_id": "brass gear"}


def test_authoring_the_narrators_tool_offers_the_added_actions_with_their_arguments_and_descriptions() -> None:
    parameters = tools.act_tool()["function"]["parameters"]
    assert parameters["properties"]["action"]["enum"][-3:] == ["open", "close", "craft"]
    assert "craft needs instance_id and with_id" in parameters["properties"]["action"]["description"]
    assert "craft: make one thing of two items you carry" in parameters["properties"]["action"]["description"]
    assert parameters["properties"]["with_id"]["description"] == "the second item, by id or name"
    assert tools.proposal('{"action": "craft", "instance_id": "gear", "with_id": "spring"}') == {
        "action": "craft", "instance_id": "gear", "with_id": "spring"}
    assert tools.proposal('{"action": "craft", "instance_id": "gear"}') is None, "its required argument"
    assert tools.act_tool(["go"])["function"]["parameters"]["properties"]["action"]["enum"] == ["go"]


def test_authoring_the_asyncapi_document_lists_every_action_and_who_added_it() -> None:
    doc = asyncapi()
    payload = doc["components"]["messages"]["action"]["payload"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in payload["oneOf"]][-3:] == ["Action.open", "Action.close",
                                                                            "Action.craft"]
    craft = doc["components"]["schemas"]["Action.craft"]["allOf"][1]
    assert craft["x-added-by"] == "examples.tinkers.actions"
    assert craft["required"] == ["action", "instance_id", "with_id"]
    assert craft["properties"]["with_id"]["maxLength"] == 128
    assert "x-added-by" not in doc["components"]["schemas"]["Action.go"]["allOf"][1]
