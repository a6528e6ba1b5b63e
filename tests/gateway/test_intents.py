"""The SSE chat's intent parser: common phrasings map to the actions of the protocol."""
from __future__ import annotations

import pytest

from gateway.chat.intents import parse_intent


@pytest.mark.parametrize("text, expected", [
    ("take dream bottle", {"action": "collect_item", "instance_id": "dream bottle"}),
    ("Pick up the moon key.", {"action": "collect_item", "instance_id": "moon key"}),
    ("grab a star seed", {"action": "collect_item", "instance_id": "star seed"}),
    ("drop the dream bottle", {"action": "drop_item", "instance_id": "dream bottle"}),
    ("put down quill on display table", {"action": "drop_item", "instance_id": "quill", "destination": "display_table"}),
    ("go to the counter", {"action": "go", "destination": "counter"}),
    ("walk into main room", {"action": "go", "destination": "main room"}),
    ("look", {"action": "examine"}),
    ("look around", {"action": "examine"}),
    ("examine the moon key", {"action": "examine", "instance_id": "moon key"}),
    ("inventory", {"action": "inventory"}),
    ("what am I carrying?", {"action": "inventory"}),
    ("give dream bottle to Louisa", {"action": "give_item", "instance_id": "dream bottle", "npc_id": "louisa"}),
    ("talk to Louisa", {"action": "talk", "npc_id": "louisa", "message": ""}),
    ("talk to louisa about the garden", {"action": "talk", "npc_id": "louisa", "message": "garden"}),
    ("ask Louisa about dreams", {"action": "talk", "npc_id": "louisa", "message": "dreams"}),
    ("use dream bottle", {"action": "use_item", "instance_id": "dream bottle"}),
    ("hello there!", {"action": "talk", "npc_id": "anyone", "message": "hello there!"}),
])
def test_chat_lines_become_actions(text: str, expected: dict) -> None:
    assert parse_intent(text) == expected
