"""The model narrator against a real OpenAI-compatible server (llama-cpp-python + SmolLM2): streaming,
deadlines, a dead or killed server, cancellation, shutdown, caps, tool proposals and the guard. Where a test
needs a given story it holds the real model to it with a grammar (llama.cpp's `grammar` request field)."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.chat import tools
from gateway.chat.model import ModelNarrator
from gateway.chat.narration import MID_STREAM_BREAK, Narration
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.prompt import Scene, Turn, narrate_messages, propose_messages
from harness.system.llmserver import ModelServer
from harness.system.procs import free_port
from shared.config import Settings
from tests.helpers import eventually, server_log

KB_SAYS = "You take the dream bottle."
TOLD = "You take the dream bottle, and it hums softly."


def grammar(*sentences: str, repeat: str = "") -> str:
    """narrator_extra_body holding the real model to these sentences (then `repeat`, again and again)."""
    rule = " ".join(json.dumps(s + " ") for s in sentences) + (f" ({json.dumps(repeat + ' ')})+" if repeat else "")
    return json.dumps({"grammar": f"root ::= {rule}"})


# A long answer the guard lets through: the story's first sentence, then one sentence again and again.
LONG = {"narrator_max_tokens": 2000, "narrator_sentences": 0,
        "narrator_extra_body": grammar(TOLD, repeat="The bottles hum softly.")}
VIEW = {
    "player": {"current_area": "main_room", "inventory": [
        {"instance_id": "moon_key_1", "semantic_name": "moon key", "template_id": "moon_key"}]},
    "areas": {"main_room": {"name": "Main Room", "description": "Shelves lean in.", "exits": ["entrance", "counter"],
                            "spots": {"shelf_1": {"name": "left shelf", "items": [
                                {"instance_id": "dream_bottle_1", "semantic_name": "dream bottle"}]}}}},
    "npcs": {"louisa": {"name": "Louisa", "area_id": "main_room"}, "woander": {"name": "Woander", "area_id": "garden"}},
    "players": [{"user_id": "alice", "area_id": "main_room"}, {"user_id": "bob", "area_id": "main_room"},
                {"user_id": "carol", "area_id": "garden"}],
}


async def make(server_url: str, warm: bool = True, **settings: object) -> tuple[ModelNarrator, CollectorRegistry]:
    """A narrator on the server; `warm`: its endpoint checked and the prompt's prefix read, as at a gateway's start
    (a cold prefix costs a fresh server seconds, more on busy cores)."""
    registry = CollectorRegistry()
    values = {"narrator_url": server_url, "narrator_model": "smollm2", "narrator_temperature": 0.0,
              "narrator_first_token_s": 30.0, "narrator_answer_s": 60.0, **settings}  # two busy cores
    narrator = ModelNarrator(Settings(**values), NarratorMetrics(registry))  # type: ignore[arg-type]
    if warm:
        assert await narrator.endpoint.check() == "ok"
    return narrator, registry


def scene(line: str = "take the dream bottle", user: str = "alice") -> Scene:
    return Scene(user, line, VIEW, [Turn("look around", "examine", True, "You see shelves.")],
                 {"action": "collect_item", "instance_id": "dream bottle"},
                 {"success": True, "message": KB_SAYS, "changes": []})


async def collect(narration: Narration) -> str:
    try:
        return "".join([piece async for piece in narration])
    finally:
        narration.close()


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


def test_llm_prompt_shows_kbs_decision_and_the_scene_by_name() -> None:
    story = narrate_messages(scene())[-1]["content"]
    assert story.splitlines() == ["Place: Main Room.", 'Earlier: "look around" worked.', f"Worked: {KB_SAYS}"]
    proposal = propose_messages(scene())[-1]["content"]
    assert "In reach: dream bottle." in proposal and "Here: Louisa, player A." in proposal
    assert "bob" not in proposal and "carol" not in proposal and "Woander" not in proposal
    assert "You carry: moon key." in proposal and "Exits: Entrance, Counter." in proposal


def test_llm_tool_is_kbs_action_schema() -> None:
    tool = tools.act_tool()["function"]
    assert tool["parameters"]["properties"]["action"]["enum"][:2] == ["collect_item", "drop_item"]
    assert tools.act_tool(["drop_item"])["function"]["parameters"]["required"] == ["action", "instance_id"]
    assert tools.proposal('{"action": "go", "destination": "garden"}') == {"action": "go", "destination": "garden"}
    assert tools.proposal('{"action": "go"}') is None  # go needs a destination
    assert tools.proposal('{"action": "fly"}', ["go"]) is None
    assert tools.proposal("not json") is None and tool["name"] == "act"


async def test_llm_narrative_streams_from_the_model(model_server: ModelServer) -> None:
    narrator, registry = await make(model_server.url, narrator_sentences=3,
                              narrator_extra_body=grammar(TOLD, "The shelves creak.", "Dust drifts."))
    narration = narrator.narrate(scene(), KB_SAYS)
    pieces = []
    async for piece in narration:
        pieces.append(piece)
        assert narrator.in_flight <= 1
    narration.close()
    assert narration.narrator == "model" and narration.reason is None
    assert pieces == [TOLD + " ", "The shelves creak. ", "Dust drifts. "]  # a whole sentence at a time
    await eventually(lambda: narrator.in_flight == 0)  # the request closed: its slot is free
    assert sample(registry, "gaia_gateway_narrator_requests_in_flight") == 0
    assert sample(registry, "gaia_gateway_narrator_first_token_seconds_count") == 1
    assert sample(registry, "gaia_gateway_narrator_tokens_per_second_count") == 1
    assert sample(registry, "gaia_gateway_narrator_answers_total", {"narrator": "model", "reason": ""}) == 1
    await narrator.close()


@pytest.mark.parametrize(("forced", "reason"), [
    ("You can't find it anywhere.", "model_contradiction"),  # a successful take told as failure (issue 39)
    ("Other players here: duoB.", "model_leak"),  # the old prompt's scaffolding
    ("I have taken the magic from the box (magic_box).", "model_leak"),
])
async def test_llm_guard_tells_kbs_message_for_a_story_that_breaks_its_rules(
        model_server: ModelServer, forced: str, reason: str) -> None:
    narrator, registry = await make(model_server.url, narrator_extra_body=grammar(forced))
    narration = narrator.narrate(scene(), KB_SAYS)
    assert await collect(narration) == KB_SAYS and (narration.narrator, narration.reason) == ("fallback", reason)
    assert sample(registry, "gaia_gateway_narrator_answers_total", {"narrator": "fallback", "reason": reason}) == 1
    await narrator.close()


async def test_llm_a_sentence_cut_by_the_token_cap_is_left_out_and_said(model_server: ModelServer) -> None:
    narrator, _ = await make(model_server.url, narrator_max_tokens=14,
                       narrator_extra_body=grammar(TOLD, repeat="The bottles hum softly in colours nobody named."))
    narration = narrator.narrate(scene(), KB_SAYS)
    assert await collect(narration) == TOLD + " " and (narration.narrator, narration.reason) == ("model", "model_length")
    await narrator.close()


async def test_llm_answer_cut_by_its_deadline_ends_with_kbs_message(model_server: ModelServer) -> None:
    narrator, registry = await make(model_server.url, narrator_answer_s=6.0, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    text = await collect(narration)
    assert narration.narrator == "fallback" and narration.reason == "model_timeout"
    assert narration.text and text.startswith("".join(narration.text))  # the model's part came first
    assert text.endswith(MID_STREAM_BREAK.lstrip() + KB_SAYS)
    assert sample(registry, "gaia_gateway_narrator_answers_total",
                  {"narrator": "fallback", "reason": "model_timeout"}) == 1
    await narrator.close()


async def test_llm_model_down_gives_kbs_message_at_once() -> None:
    narrator, registry = await make(f"http://127.0.0.1:{free_port()}/v1", warm=False)
    narration = narrator.narrate(scene(), KB_SAYS)
    assert await collect(narration) == KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_unavailable")
    action, reason = await narrator.propose(scene("sing to the moon"), time.perf_counter() + 5)
    assert action is None and reason == "model_unavailable"
    await eventually(lambda: narrator.in_flight == 0)
    await narrator.close()


async def test_llm_server_killed_mid_stream(model_server: ModelServer) -> None:
    narrator, _ = await make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    first = await narration.__anext__()
    model_server.kill()
    rest = await collect(narration)
    assert first and rest.endswith(MID_STREAM_BREAK.lstrip() + KB_SAYS)
    assert narration.narrator == "fallback" and narration.reason in ("model_error", "model_unavailable")
    await eventually(lambda: narrator.in_flight == 0)
    await narrator.close()


async def test_llm_close_mid_stream_cancels_the_model_request(model_server: ModelServer) -> None:
    narrator, registry = await make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    assert await narration.__anext__()
    narration.close()  # the player went away
    await eventually(lambda: narrator.in_flight == 0 and sample(registry, "gaia_gateway_narrator_requests_in_flight") == 0)
    assert sample(registry, "gaia_gateway_narrator_answers_total", {"narrator": "fallback", "reason": "cancelled"}) == 1
    # The server sees the connection go and stops generating (it would run 2000 tokens otherwise).
    await eventually(lambda: "Disconnected from client" in server_log(model_server), timeout=10)
    await narrator.close()


async def test_llm_shutdown_ends_narratives_in_flight(model_server: ModelServer) -> None:
    narrator, _ = await make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    assert await narration.__anext__()
    narrator.stop()
    text = await asyncio.wait_for(collect(narration), 2)
    assert text.endswith(KB_SAYS) and (narration.narrator, narration.reason) == ("fallback", "shutdown")
    later = narrator.narrate(scene(), KB_SAYS)
    assert await collect(later) == KB_SAYS and later.reason == "shutdown"
    await narrator.close()


async def test_llm_caps_per_user_and_the_queue_for_a_slot(model_server: ModelServer) -> None:
    """One slot (llama.cpp's server answers one request at a time): a user at her share is `model_busy` at
    once; another player waits in the queue for the slot and gets it as soon as it is freed."""
    narrator, registry = await make(model_server.url, narrator_max_per_user=1, narrator_max_inflight=1, **LONG)
    first = narrator.narrate(scene(user="alice"), KB_SAYS)
    assert await first.__anext__() == TOLD + " "
    second = narrator.narrate(scene(user="alice"), KB_SAYS)
    assert await collect(second) == KB_SAYS and second.reason == "model_busy"  # her share is in use
    third = narrator.narrate(scene(user="carol"), KB_SAYS)  # the slot is taken: carol waits for it
    await eventually(lambda: sample(registry, "gaia_gateway_narrator_requests_queued") == 1)
    first.close()
    assert await third.__anext__() == TOLD + " "  # alice's slot, as soon as she left
    third.close()
    await eventually(lambda: narrator.in_flight == 0)
    assert sample(registry, "gaia_gateway_narrator_queue_seconds_count") == 1
    await narrator.close()


async def test_llm_proposes_an_action_through_the_tool(model_server: ModelServer) -> None:
    narrator, registry = await make(model_server.url, narrator_actions=("drop_item",))
    action, reason = await narrator.propose(scene("let the moon have what I carry"), time.perf_counter() + 30)
    assert reason is None and action is not None
    assert action["action"] == "drop_item" and action["instance_id"]  # the grammar held it to the schema
    assert sample(registry, "gaia_gateway_narrator_proposals_total", {"outcome": "action"}) == 1
    await eventually(lambda: narrator.in_flight == 0)
    await narrator.close()


def test_llm_key_stays_out_of_settings_repr() -> None:
    settings = Settings.from_env({"GAIA_NARRATOR_API_KEY": "sk-do-not-print"})
    assert settings.narrator_api_key == "sk-do-not-print" and "sk-do-not-print" not in repr(settings)
    assert json.dumps(tools.act_tool()).find("sk-") == -1


@pytest.fixture(autouse=True)
def _quiet_model_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
