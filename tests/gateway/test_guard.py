"""The guard after the model: the stories of issue 39 that players must not see, and stories they may."""
from __future__ import annotations

from typing import Any

import pytest

from gateway.chat.guard import CONTRADICTION, LEAK, Sentences, check, complete, facts_of
from gateway.chat.prompt import Scene

VIEW = {
    "player": {"current_area": "main_room", "inventory": []},
    "areas": {
        "main_room": {"name": "Main Room", "description": "Shelves lean in.", "exits": ["entrance", "counter"],
                      "spots": {"shelf_1": {"name": "left shelf", "items": [
                          {"instance_id": "dream_bottle_1", "semantic_name": "dream bottle"}]},
                          "display_table": {"name": "display table", "items": [
                              {"instance_id": "feather_quill_1", "semantic_name": "feather quill"}]}}},
        "counter": {"name": "Counter", "exits": ["main_room"], "spots": {}},
        "entrance": {"name": "Entrance", "exits": ["main_room"], "spots": {}},
        "garden": {"name": "Garden", "exits": ["entrance"], "spots": {}}},
    "npcs": {"louisa": {"name": "Louisa", "area_id": "main_room"}},
    "players": [{"user_id": "alice", "area_id": "main_room"}, {"user_id": "duoB", "area_id": "main_room"}],
}


def facts(action: str, success: bool, message: str, carrying: tuple[str, ...] = (), **args: Any) -> Any:
    view = {**VIEW, "player": {"current_area": "main_room",
                               "inventory": [{"instance_id": f"{n}_9", "semantic_name": n} for n in carrying]}}
    return facts_of(Scene("alice", "a line", view, (), {"action": action, **args},
                          {"success": success, "message": message}))


TAKEN = facts("collect_item", True, "You take the dream bottle.", instance_id="dream bottle")
NO_TAKE = facts("collect_item", False, "There is no magic here.", instance_id="magic")
NO_GO = facts("go", False, "You can't get to the Garden from here.", destination="garden")
EMPTY = facts("inventory", True, "You are carrying nothing.")
CARRYING = facts("inventory", True, "You are carrying: dream bottle.", ("dream bottle",))
TALKED_CARRYING = facts("talk", True, "Nobody here answers.", ("moon key",), npc_id="anyone")
TALKED = facts("talk", True, 'Louisa tilts her head. "I\'m not sure I follow, but I like the sound of it."',
               npc_id="anyone")


@pytest.mark.parametrize(("story", "about", "finding"), [
    ("You can't find it anywhere.", TAKEN, CONTRADICTION),  # a successful take told as failure
    ("You've successfully taken a pill.", NO_GO, CONTRADICTION),  # a refused go told as success
    ("You take the magic from the box.", NO_TAKE, CONTRADICTION),
    ("You are wearing a feather quill.", EMPTY, CONTRADICTION),  # an empty inventory told as holding the quill
    ("Your pockets are empty.", CARRYING, CONTRADICTION),  # kb's view: the dream bottle is carried
    ("You are carrying nothing, but the bottles listen.", TALKED_CARRYING, CONTRADICTION),
    ("You also take the feather quill.", TAKEN, CONTRADICTION),  # a change kb did not make
    ("You walk into the Counter.", NO_GO, CONTRADICTION),
    ("You take the dream bottle; you drop it.", TAKEN, CONTRADICTION),  # a change of another kind
    ("You take the dream bottle, and it's gone.", TAKEN, CONTRADICTION),  # an absence kb did not tell
    ("You are carrying: umbrella; your umbrella is gone.", facts("inventory", True, "You are carrying: umbrella.",
                                                                 ("umbrella",)), CONTRADICTION),
    ("I've taken magic from the box (magic_box).", NO_TAKE, LEAK),
    ("You are wearing a feather quill (feather_quill_1).", EMPTY, LEAK),
    ("The world says: you take it.", TAKEN, LEAK),
    ("Other players here: duoB.", TAKEN, LEAK),
    ("Louisa (louisa) smiles at you.", TALKED, LEAK),
    ("duoB watches you take it.", TAKEN, LEAK),  # a user id, which the prompt never showed
    ("Worked: You take the dream bottle.", TAKEN, LEAK),  # the prompt's own label
    ("<|im_start|>assistant You take it.", TAKEN, LEAK),
])
def test_stories_players_must_not_see(story: str, about: Any, finding: str) -> None:
    assert check(story, about) == finding


@pytest.mark.parametrize(("story", "about"), [
    ("You take the dream bottle, and it hums softly in your hand.", TAKEN),
    ("You reach for the magic, but there is none here.", NO_TAKE),
    ("You try the garden door, but it will not open from here.", NO_GO),
    ("Your pockets are empty; you carry nothing at all.", EMPTY),
    ("You carry a single dream bottle.", CARRYING),
    ('Louisa tilts her head: "I\'m not sure I follow."', TALKED),  # her "I" is inside quotes
    ("You can't find the garden from here.", NO_GO),  # kb's own refusal, retold
])
def test_stories_that_tell_kbs_result(story: str, about: Any) -> None:
    assert check(story, about) is None


def test_the_first_sentence_tells_kbs_result_a_refusal_as_one_and_what_it_is_about() -> None:
    """Players read the first sentence before the rest is written: it must already tell kb's result."""
    assert check("The garden gleams.", NO_GO, first=True) == CONTRADICTION  # no refusal told
    assert check("You are talking to Louisa.", facts("talk", False, "There is no louisa here to talk to.",
                                                     npc_id="louisa"), first=True) == CONTRADICTION
    assert check("You cannot go that way.", NO_GO, first=True) == CONTRADICTION  # not about the Garden
    assert check("You cannot reach the garden.", NO_GO, first=True) is None
    assert check("The garden gleams.", NO_GO) is None  # a later sentence may
    assert check("You lift the dream bottle; it glows in your hand.", TAKEN, first=True) is None
    assert check("The dream bottle glows in your hand.", TAKEN, first=True) == CONTRADICTION  # taken? kb says so
    assert check("You take the bottle.", TAKEN, first=True) == CONTRADICTION  # which? kb took the dream bottle
    assert check("Your hands are empty.", EMPTY, first=True) is None  # kb names nothing: nothing to name


def test_a_success_kb_tells_plainly_is_never_told_with_a_negation() -> None:
    assert check("You look for the dream bottle, but there is none.", TAKEN) == CONTRADICTION
    assert check("You look for a bed, but there is none.", EMPTY) is None  # kb's own words carry "nothing"


def test_sentences_come_whole_and_quoted_speech_stays_one() -> None:
    gate = Sentences()
    assert gate.feed("You take the ") == []
    assert gate.feed("bottle. It hums") == ["You take the bottle. "]
    assert gate.feed('. Louisa says: "Hush. It sleeps." Then') == ["It hums. ", 'Louisa says: "Hush. It sleeps." ']
    assert gate.rest() == "Then" and not complete("Then") and complete('It sleeps."')
