"""Narration on its own: the first token at once and later ones joined per flush; a reader that fails
mid-answer ends in kb's message with its reason; close() cancels the reader and frees the slot."""
from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.chat.narration import MID_STREAM_BREAK, Narration
from gateway.chat.narratormetrics import NarratorMetrics

KB_SAYS = "You take the dream bottle."
TOKENS = [f"t{i} " for i in range(12)]


def paced(tokens: list[str], gap_s: float, fail_after: int | None = None) -> Any:
    async def answer(narration: Narration) -> None:
        for i, token in enumerate(tokens):
            if fail_after is not None and i == fail_after:
                raise ConnectionError("stream cut")
            narration.queue.put_nowait(token)
            await asyncio.sleep(gap_s)  # a model's pace
    return answer


async def read_all(narration: Narration) -> list[str]:
    try:
        return [piece async for piece in narration]
    finally:
        narration.close()


async def test_first_token_alone_then_tokens_joined_per_flush() -> None:
    registry, released = CollectorRegistry(), []
    narration = Narration(KB_SAYS, NarratorMetrics(registry))
    narration.read(paced(TOKENS, 0.01), 5.0, 5.0, lambda: released.append(1), flush_s=0.05)
    chunks = await read_all(narration)
    assert chunks[0] == "t0 " and "".join(chunks) == "".join(TOKENS)
    assert len(chunks) < len(TOKENS)  # joined after the first
    assert narration.narrator == "model" and released == [1] and narration.pieces == len(TOKENS)
    assert registry.get_sample_value("gaia_gateway_narrator_tokens_per_second_count") == 1


async def test_reader_failing_mid_answer_ends_with_kbs_message() -> None:
    registry = CollectorRegistry()
    narration = Narration(KB_SAYS, NarratorMetrics(registry))
    narration.read(paced(TOKENS, 0.0, fail_after=3), 5.0, 5.0, lambda: None)
    text = "".join(await read_all(narration))
    assert text == "".join(TOKENS[:3]) + MID_STREAM_BREAK + KB_SAYS
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
    narration.read(paced(TOKENS * 100, 0.01), 5.0, 60.0, lambda: released.append(1))
    assert await narration.__anext__() == "t0 "
    reader = narration._reader
    narration.close()
    assert reader is not None
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    assert (narration.narrator, narration.reason, released) == ("fallback", "cancelled", [1])


async def _silent(narration: Narration) -> None:
    await asyncio.Event().wait()  # a model that never answers
