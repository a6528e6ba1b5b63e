"""Narration on its own: the model's text goes out a whole sentence at a time, each checked by the guard;
a sentence cut by a limit is left out and said (`model_length`); a reader that fails mid-answer ends in
kb's message with its reason; close() cancels the reader and frees the slot."""
from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.chat.guard import Facts
from gateway.chat.narration import MID_STREAM_BREAK, Narration
from gateway.chat.narratormetrics import NarratorMetrics

KB_SAYS = "You take the dream bottle."
TAKEN = Facts("collect_item", True, KB_SAYS, frozenset({"alice"}), frozenset({"dream bottle", "feather quill"}))
REFUSED = Facts("go", False, "You can't get to the Counter from here.", frozenset({"alice"}),
                frozenset({"counter", "main room"}))
TOKENS = [f"t{i} " for i in range(12)]


def paced(tokens: list[str], gap_s: float, fail_after: int | None = None, finish: str | None = "stop") -> Any:
    async def answer(narration: Narration) -> None:
        for i, token in enumerate(tokens):
            if fail_after is not None and i == fail_after:
                raise ConnectionError("stream cut")
            narration.queue.put_nowait(token)
            await asyncio.sleep(gap_s)  # a model's pace
        narration.end(finish)
    return answer


def words(text: str) -> list[str]:
    return [w + " " for w in text.split()]


async def read_all(narration: Narration) -> list[str]:
    try:
        return [piece async for piece in narration]
    finally:
        narration.close()


async def test_sentences_go_out_whole_and_the_story_stops_after_its_count() -> None:
    registry, released = CollectorRegistry(), []
    story = "You take the dream bottle. It hums. It is warm. It glows."
    narration = Narration(KB_SAYS, NarratorMetrics(registry), facts=TAKEN, sentences=2)
    narration.read(paced(words(story), 0.001), 5.0, 5.0, lambda: released.append(1))
    chunks = await read_all(narration)
    assert chunks == ["You take the dream bottle. ", "It hums. "]
    assert (narration.narrator, narration.reason, released) == ("model", None, [1])
    assert registry.get_sample_value("gaia_gateway_narrator_answers_total", {"narrator": "model", "reason": ""}) == 1


async def test_a_last_sentence_cut_by_the_token_cap_is_left_out_and_said() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(words("You take the dream bottle. It hums a tune that"), 0.0, finish="length"),
                   5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == "You take the dream bottle. "
    assert (narration.narrator, narration.reason) == ("model", "model_length")


async def test_a_last_sentence_without_a_space_after_it_is_told() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(["You take", " the dream bottle."], 0.0), 5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == "You take the dream bottle."
    assert (narration.narrator, narration.reason) == ("model", None)


async def test_no_whole_sentence_is_kbs_message_with_model_length() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(words("You reach for the"), 0.0, finish="length"), 5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_length")


async def test_a_contradicting_first_sentence_is_never_told() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(words("You can't find it anywhere. Sorry."), 0.0), 5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_contradiction")


async def test_a_leak_after_a_good_sentence_ends_in_kbs_message() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(words("You take the dream bottle. Other players here: duoB."), 0.0), 5.0, 5.0, lambda: None)
    text = "".join(await read_all(narration))
    assert text == "You take the dream bottle. " + MID_STREAM_BREAK.lstrip() + KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_leak")


async def test_a_refusal_whose_first_sentence_does_not_tell_it_is_never_told() -> None:
    narration = Narration(REFUSED.message, facts=REFUSED)
    narration.read(paced(words("The counter gleams in the lamplight. You cannot go."), 0.0), 5.0, 5.0,
                   lambda: None)
    assert "".join(await read_all(narration)) == REFUSED.message and narration.reason == "model_contradiction"


async def test_reader_failing_mid_answer_ends_with_kbs_message() -> None:
    registry = CollectorRegistry()
    narration = Narration(KB_SAYS, NarratorMetrics(registry), facts=TAKEN)
    narration.read(paced(words("You take the dream bottle. It hums"), 0.0, fail_after=6), 5.0, 5.0, lambda: None)
    text = "".join(await read_all(narration))
    assert text == "You take the dream bottle. " + MID_STREAM_BREAK.lstrip() + KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_error")
    assert registry.get_sample_value("gaia_gateway_narrator_answers_total",
                                     {"narrator": "fallback", "reason": "model_error"}) == 1


async def test_no_first_token_in_time_is_a_timeout_with_kbs_whole_message() -> None:
    narration = Narration(KB_SAYS)
    narration.read(_silent, 0.05, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == KB_SAYS and narration.reason == "model_timeout"


async def test_close_mid_answer_cancels_the_reader() -> None:
    released: list[int] = []
    narration = Narration(KB_SAYS)
    narration.read(paced(["It hums. "] * 100, 0.01), 5.0, 60.0, lambda: released.append(1))
    assert await narration.__anext__() == "It hums. "
    reader = narration._reader
    narration.close()
    assert reader is not None
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    assert (narration.narrator, narration.reason, released) == ("fallback", "cancelled", [1])


async def test_a_flood_of_text_is_cut_at_its_last_whole_sentence() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(["You take the dream bottle. ", "x" * 5000], 0.0), 5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == "You take the dream bottle. "
    assert narration.reason == "model_length"


async def _silent(narration: Narration) -> None:
    await asyncio.Event().wait()  # a model that never answers


async def test_sentences_checked_in_the_same_piece_as_a_bad_one_are_never_told() -> None:
    narration = Narration(KB_SAYS, facts=TAKEN)
    narration.read(paced(["You take the dream bottle. The world says: hi. "], 0.0), 5.0, 5.0, lambda: None)
    assert "".join(await read_all(narration)) == KB_SAYS and narration.text == []
    assert narration.reason == "model_leak"
