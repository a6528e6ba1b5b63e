"""The model narrator against a real OpenAI-compatible server (llama-cpp-python + SmolLM2): streaming,
deadlines, a dead or killed server, cancellation, shutdown, caps, tool proposals and the prompt."""
from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from gateway.chat import tools
from gateway.chat.model import ModelNarrator
from gateway.chat.narration import MID_STREAM_BREAK, Narration
from gateway.chat.narratormetrics import NarratorMetrics
from gateway.chat.prompt import Scene, describe, narrate_messages
from harness.system.llmserver import ModelServer
from harness.system.procs import free_port
from shared.config import Settings
from tests.helpers import eventually, server_log

KB_SAYS = "You take the dream bottle."
LONG = {"narrator_max_tokens": 2000, "narrator_extra_body": '{"min_tokens": 1500}'}  # llama.cpp: no early end
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


def make(server_url: str, **settings: object) -> tuple[ModelNarrator, CollectorRegistry]:
    registry = CollectorRegistry()
    values = {"narrator_url": server_url, "narrator_model": "smollm2", "narrator_temperature": 0.0,
              "narrator_first_token_s": 30.0, "narrator_answer_s": 60.0, **settings}  # two busy cores
    return ModelNarrator(Settings(**values), NarratorMetrics(registry)), registry  # type: ignore[arg-type]


def scene(line: str = "take the dream bottle", user: str = "alice") -> Scene:
    return Scene(user, line, VIEW, [("look around", "You see shelves.")],
                 {"action": "collect_item", "instance_id": "dream bottle"},
                 {"success": True, "message": KB_SAYS, "changes": []})


async def collect(narration: Narration) -> str:
    try:
        return "".join([piece async for piece in narration])
    finally:
        narration.close()


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


def test_llm_prompt_shows_the_scene_and_kbs_decision() -> None:
    text = describe(VIEW, "alice")
    assert "Main Room (main_room)" in text and "dream bottle (dream_bottle_1)" in text
    assert "Louisa (louisa)" in text and "Woander" not in text  # only the characters here
    assert "Other players here: bob." in text and "carol" not in text
    assert "carries: moon key (moon_key_1)" in text and "Exits: entrance, counter." in text
    messages = narrate_messages(scene())
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert KB_SAYS in messages[-1]["content"] and "It worked." in messages[-1]["content"]
    assert "take the dream bottle" in messages[-1]["content"]


def test_llm_tool_is_kbs_action_schema() -> None:
    tool = tools.act_tool()["function"]
    assert tool["parameters"]["properties"]["action"]["enum"][:2] == ["collect_item", "drop_item"]
    assert tools.act_tool(["drop_item"])["function"]["parameters"]["required"] == ["action", "instance_id"]
    assert tools.proposal('{"action": "go", "destination": "garden"}') == {"action": "go", "destination": "garden"}
    assert tools.proposal('{"action": "go"}') is None  # go needs a destination
    assert tools.proposal('{"action": "fly"}', ["go"]) is None
    assert tools.proposal("not json") is None and tool["name"] == "act"


async def test_llm_narrative_streams_from_the_model(model_server: ModelServer) -> None:
    narrator, registry = make(model_server.url)
    narration = narrator.narrate(scene(), KB_SAYS)
    pieces = []
    async for piece in narration:
        pieces.append(piece)
        assert narrator.in_flight == 1 and sample(registry, "gaia_gateway_narrator_requests_in_flight") == 1
    narration.close()
    assert narration.narrator == "model" and narration.reason is None
    assert len(pieces) > 3 and "".join(pieces).strip()
    assert narrator.in_flight == 0 and not narrator.per_user
    assert sample(registry, "gaia_gateway_narrator_first_token_seconds_count") == 1
    assert sample(registry, "gaia_gateway_narrator_tokens_per_second_count") == 1
    assert sample(registry, "gaia_gateway_narrator_answers_total", {"narrator": "model", "reason": ""}) == 1
    await narrator.close()


async def test_llm_answer_cut_by_its_deadline_ends_with_kbs_message(model_server: ModelServer) -> None:
    narrator, registry = make(model_server.url, narrator_answer_s=6.0, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    text = await collect(narration)
    assert narration.narrator == "fallback" and narration.reason == "model_timeout"
    assert narration.text and text.startswith("".join(narration.text))  # the model's part came first
    assert text.endswith(MID_STREAM_BREAK + KB_SAYS)
    assert sample(registry, "gaia_gateway_narrator_answers_total",
                  {"narrator": "fallback", "reason": "model_timeout"}) == 1
    await narrator.close()


async def test_llm_model_down_gives_kbs_message_at_once() -> None:
    narrator, registry = make(f"http://127.0.0.1:{free_port()}/v1")
    narration = narrator.narrate(scene(), KB_SAYS)
    assert await collect(narration) == KB_SAYS
    assert (narration.narrator, narration.reason) == ("fallback", "model_unavailable")
    action, reason = await narrator.propose(scene("sing to the moon"))
    assert action is None and reason == "model_unavailable"
    assert narrator.in_flight == 0
    await narrator.close()


async def test_llm_server_killed_mid_stream(model_server: ModelServer) -> None:
    narrator, _ = make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    first = await narration.__anext__()
    model_server.kill()
    rest = await collect(narration)
    assert first and rest.endswith(MID_STREAM_BREAK + KB_SAYS)
    assert narration.narrator == "fallback" and narration.reason in ("model_error", "model_unavailable")
    assert narrator.in_flight == 0
    await narrator.close()


async def test_llm_close_mid_stream_cancels_the_model_request(model_server: ModelServer) -> None:
    narrator, registry = make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    assert await narration.__anext__()
    narration.close()  # the player went away
    assert narrator.in_flight == 0 and sample(registry, "gaia_gateway_narrator_requests_in_flight") == 0
    assert sample(registry, "gaia_gateway_narrator_answers_total", {"narrator": "fallback", "reason": "cancelled"}) == 1
    # The server sees the connection go and stops generating (it would run 2000 tokens otherwise).
    await eventually(lambda: "Disconnected from client" in server_log(model_server), timeout=10)
    await narrator.close()


async def test_llm_shutdown_ends_narratives_in_flight(model_server: ModelServer) -> None:
    narrator, _ = make(model_server.url, **LONG)
    narration = narrator.narrate(scene("tell me a very long story about every bottle"), KB_SAYS)
    assert await narration.__anext__()
    narrator.stop()
    text = await asyncio.wait_for(collect(narration), 2)
    assert text.endswith(KB_SAYS) and (narration.narrator, narration.reason) == ("fallback", "shutdown")
    later = narrator.narrate(scene(), KB_SAYS)
    assert await collect(later) == KB_SAYS and later.reason == "shutdown"
    await narrator.close()


async def test_llm_caps_per_user_and_process(model_server: ModelServer) -> None:
    narrator, _ = make(model_server.url, narrator_max_per_user=1, narrator_max_inflight=2, narrator_max_tokens=400)
    first = narrator.narrate(scene(user="alice"), KB_SAYS)
    second = narrator.narrate(scene(user="alice"), KB_SAYS)
    assert await collect(second) == KB_SAYS and second.reason == "model_unavailable"  # alice is at her cap
    other = narrator.narrate(scene(user="bob"), KB_SAYS)
    third = narrator.narrate(scene(user="carol"), KB_SAYS)
    assert await collect(third) == KB_SAYS and third.reason == "model_unavailable"  # the process is at its cap
    for narration in (first, other):
        narration.close()
    assert narrator.in_flight == 0
    await narrator.close()


async def test_llm_proposes_an_action_through_the_tool(model_server: ModelServer) -> None:
    narrator, registry = make(model_server.url, narrator_actions=("drop_item",))
    action, reason = await narrator.propose(scene("let the moon have what I carry"))
    assert reason is None and action is not None
    assert action["action"] == "drop_item" and action["instance_id"]  # the grammar held it to the schema
    assert sample(registry, "gaia_gateway_narrator_proposals_total", {"outcome": "action"}) == 1
    assert narrator.in_flight == 0
    await narrator.close()


def test_llm_key_stays_out_of_settings_repr() -> None:
    settings = Settings.from_env({"GAIA_NARRATOR_API_KEY": "sk-do-not-print"})
    assert settings.narrator_api_key == "sk-do-not-print" and "sk-do-not-print" not in repr(settings)
    assert json.dumps(tools.act_tool()).find("sk-") == -1


@pytest.fixture(autouse=True)
def _quiet_model_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
