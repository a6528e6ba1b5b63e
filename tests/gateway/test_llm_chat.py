"""Chat with a real model behind the gateway (llama-cpp-python's server with SmolLM2, nats-server, kb and
gateway as processes): both transports, the guard, a cut, a player who leaves, a killed model server, a
proposal kb refuses, a proposal past its deadline, a refused key, and SIGTERM with chats in flight. Where a
test needs a given story it holds the real model to it with a grammar (llama.cpp's `grammar` field)."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from harness.client.sse import read_events
from harness.client.ws import GaiaClient
from harness.system.llmserver import ModelServer
from harness.system.procs import NatsServer, ServiceProcess, kb_and_gateway, wait_healthy
from shared.auth import issue_token
from shared.config import Settings
from tests.helpers import EXPERIENCE, eventually, need_model, server_log

SECRET_KEY = "sk-gaia-test-never-logged"
TOLD = "You go to the Main Room, where the bottles glow."  # a story the guard lets through for "go to the main room"


def grammar(first: str, repeat: str = "") -> str:
    """narrator_extra_body holding the real model to `first`, then `repeat` again and again."""
    rule = json.dumps(first + " ") + (f" ({json.dumps(repeat + ' ')})+" if repeat else "")
    return json.dumps({"grammar": f"root ::= {rule}"})


# A long answer the guard lets through: TOLD, then one sentence again and again, read to its end.
LONG_ANSWER = {"narrator_max_tokens": "1500", "narrator_sentences": "0",
               "narrator_extra_body": grammar(TOLD, "The bottles hum softly.")}
System = Callable[..., Awaitable[tuple[ServiceProcess, ServiceProcess]]]
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def llm_system(model_server: ModelServer, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[System]:
    """start(**settings) -> (kb, gateway) processes whose narrator is the real model."""
    started: list[ServiceProcess] = []

    async def start(**settings: str) -> tuple[ServiceProcess, ServiceProcess]:
        values = {"narrator_url": model_server.url, "narrator_model": "smollm2", "narrator_api_key": SECRET_KEY,
                  "narrator_temperature": "0", "narrator_first_token_s": "30", "narrator_answer_s": "90", **settings}
        kb, gateway = await asyncio.to_thread(kb_and_gateway, nats_server, tmp_path, **values)
        started.extend([gateway, kb])
        await wait_healthy(gateway.url)
        await eventually(lambda: checked(gateway), timeout=60)  # the prompt's prefix read: no cold first story
        return kb, gateway

    yield start
    for proc in started:
        await asyncio.to_thread(proc.stop)


async def checked(gateway: ServiceProcess) -> bool:
    """The gateway has checked its endpoint (and, when it answered, read the prompt's shared prefix once)."""
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/health") as resp:
        return bool((await resp.json())["narrator"]["status"] != "unchecked")


def token(user_id: str) -> str:
    return issue_token(Settings(), user_id)


async def player(gateway: ServiceProcess, user_id: str) -> GaiaClient:
    client = GaiaClient(gateway.url, token(user_id), EXPERIENCE)
    await client.connect()
    await client.next("area_of_interest")
    return client


async def sse_chat(gateway: ServiceProcess, user_id: str, line: str,
                   until: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any] | str]:
    """POST /chat/unified; every data frame (JSON, or the closing "[DONE]"); stops early once `until` holds."""
    frames: list[dict[str, Any] | str] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway.url}/chat/unified", json={"message": line, "experience": EXPERIENCE},
                             headers={"Authorization": f"Bearer {token(user_id)}"}) as resp:
            assert resp.status == 200
            async for event in read_events(resp):
                frame = event.data if event.data == "[DONE]" else event.json()
                frames.append(frame)
                if until is not None and isinstance(frame, dict) and until(frame):
                    break
    return frames


async def metric(gateway: ServiceProcess, line: str) -> float:
    """The value of one /metrics sample (its name with labels, as printed), 0 when absent."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/metrics", headers=gateway.admin_headers) as resp:
            text = await resp.text()
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def story(frames: list[dict[str, Any]]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "chat_chunk")


async def test_llm_chat_over_websocket_world_first_then_the_models_story(llm_system: System) -> None:
    _, gateway = await llm_system(narrator_extra_body=grammar(TOLD, "The shelves creak."))
    alice = await player(gateway, "alice")
    frames = [f async for f in alice.chat("go to the main room", timeout=60)]
    done = frames[-1]
    assert done["type"] == "chat_done" and done["narrator"] == "model" and "reason" not in done
    assert done["action"] == "go" and done["success"] is True
    assert story(frames) == f"{TOLD} The shelves creak. "  # two whole sentences, each a chunk
    assert [f["delta"] for f in frames[:-1]] == [TOLD + " ", "The shelves creak. "]
    kinds = [f["type"] for f in alice.frames]
    assert kinds.index("world_update") < kinds.index("chat_chunk")  # the world change first
    assert await metric(gateway, 'gaia_gateway_narrator_answers_total{narrator="model",reason=""}') == 1
    assert await metric(gateway, "gaia_gateway_narrator_first_token_seconds_count") == 1
    assert await metric(gateway, "gaia_gateway_narrator_tokens_per_second_count") == 1
    assert await metric(gateway, "gaia_gateway_narrator_requests_in_flight") == 0
    await alice.close()
    assert SECRET_KEY not in Path(gateway.log_path or "").read_text()


async def test_llm_chat_over_sse_metadata_names_the_model(llm_system: System) -> None:
    _, gateway = await llm_system(narrator_extra_body=grammar(TOLD, "The shelves creak."))
    frames = await sse_chat(gateway, "bob", "go to the main room")
    assert frames[0]["type"] == "metadata" and frames[0]["model"] == "smollm2"  # type: ignore[index]
    dicts = [f for f in frames if isinstance(f, dict)]
    kinds = [f.get("type") or f.get("object") for f in dicts]
    assert kinds.index("world_update") < kinds.index("chat.completion.chunk")
    chunks = [f for f in dicts if f.get("object") == "chat.completion.chunk"]
    assert len(chunks) == 2 and all(c["model"] == "smollm2" for c in chunks)
    end = dicts[-2]
    assert end["type"] == "metadata" and end["narrator"] == "model" and "reason" not in end
    assert (end["action"], end["success"]) == ("go", True)  # as chat_done says
    assert frames[-1] == "[DONE]" and dicts[-1] == {"type": "done", "finish_reason": "stop"}


async def test_llm_answer_cut_mid_stream_falls_back_to_kbs_message(llm_system: System) -> None:
    _, gateway = await llm_system(narrator_answer_s="6", **LONG_ANSWER)
    alice = await player(gateway, "alice")
    frames = [f async for f in alice.chat("go to the main room", timeout=60)]
    done = frames[-1]
    assert (done["narrator"], done["reason"], done["success"]) == ("fallback", "model_timeout", True)
    model_part, _, kb_part = story(frames).rpartition(" ... ")
    assert model_part.strip() and kb_part.strip()  # the model's words, then kb's message
    assert 5500 < done["total_time_ms"] < 20000
    await alice.close()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_llm_player_leaving_mid_stream_cancels_the_model_request(llm_system: System, model_server: ModelServer,
                                                                       transport: str) -> None:
    _, gateway = await llm_system(**LONG_ANSWER)
    if transport == "websocket":
        carol = await player(gateway, "carol")
        async for frame in carol.chat("go to the main room", timeout=60):
            if frame["type"] == "chat_chunk":
                break
        await carol.drop()  # gone without a close frame, like a phone losing its network
    else:
        frames = await sse_chat(gateway, "carol", "go to the main room",
                                until=lambda f: f.get("object") == "chat.completion.chunk")
        assert frames[-1]["object"] == "chat.completion.chunk"  # type: ignore[index]
    left = time.monotonic()
    await eventually(lambda: "Disconnected from client" in server_log(model_server), timeout=15)
    assert time.monotonic() - left < 10  # 4,000 tokens would take far longer than that
    answers = 'gaia_gateway_narrator_answers_total{narrator="fallback",reason="cancelled"}'

    async def counted() -> bool:
        in_flight = await metric(gateway, "gaia_gateway_narrator_requests_in_flight")
        return await metric(gateway, answers) == 1 and in_flight == 0
    await eventually(counted, timeout=10)


async def test_llm_model_server_killed_mid_stream(llm_system: System, model_server: ModelServer) -> None:
    _, gateway = await llm_system(**LONG_ANSWER)
    dave = await player(gateway, "dave")
    frames: list[dict[str, Any]] = []
    async for frame in dave.chat("go to the main room", timeout=60):
        frames.append(frame)
        if len(frames) == 1:
            await asyncio.to_thread(model_server.kill)
    done = frames[-1]
    assert done["type"] == "chat_done" and done["narrator"] == "fallback"
    assert done["reason"] in ("model_error", "model_unavailable") and done["success"] is True
    assert " ... " in story(frames)  # cut off, then kb's message
    # The world is untouched by the model's death: the next chat still acts, its story from kb.
    again = [f async for f in dave.chat("go to the entrance", timeout=60)]
    assert again[-1]["success"] is True and again[-1]["reason"] == "model_unavailable"
    await dave.close()


async def test_llm_a_proposal_kb_refuses_leaves_the_line_to_the_builtin_intent(llm_system: System) -> None:
    """The model may only propose drop_item (GAIA_NARRATOR_ACTIONS); erin carries nothing, so kb refuses it:
    nothing changed, and the line is said to whoever is near, as without a model, in kb's words."""
    _, gateway = await llm_system(narrator_actions="drop_item")
    erin = await player(gateway, "erin")
    before = (await erin.get_state())["snapshot_version"]
    frames = [f async for f in erin.chat("let the moon have what I carry", timeout=90)]
    done = frames[-1]
    assert (done["action"], done["success"], done["narrator"], done["reason"]) == (
        "talk", True, "fallback", "model_no_action")
    assert story(frames).startswith("Nobody here answers")
    assert (await erin.get_state())["snapshot_version"] == before and not erin.drain("world_update")
    assert await metric(gateway, 'gaia_gateway_narrator_proposals_total{outcome="action"}') == 1
    await erin.close()


async def test_llm_a_free_form_line_waits_no_longer_than_the_first_token_deadline(llm_system: System) -> None:
    """Issue 39: "Nothing happens." after 7-9 s. The proposal is bounded by the first-token deadline, then the
    line goes as without a model (an NPC's answer, kb's words)."""
    _, gateway = await llm_system(narrator_first_token_s="0.3")
    erin = await player(gateway, "erin")
    sent = time.monotonic()
    frames = [f async for f in erin.chat("let the moon have what I carry", timeout=30)]
    done = frames[-1]
    assert time.monotonic() - sent < 2.0
    assert (done["action"], done["success"], done["narrator"]) == ("talk", True, "fallback")
    assert done["reason"] in ("model_timeout", "model_busy") and story(frames).startswith("Nobody here answers")
    await erin.close()


async def test_llm_chat_a_story_contradicting_kb_is_never_told(llm_system: System) -> None:
    _, gateway = await llm_system(narrator_extra_body=grammar("You can't find it anywhere."))
    alice = await player(gateway, "alice")
    frames = [f async for f in alice.chat("go to the main room", timeout=60)]
    done = frames[-1]
    assert (done["narrator"], done["reason"], done["success"]) == ("fallback", "model_contradiction", True)
    assert story(frames).startswith("You go to the Main Room.") and "anywhere" not in story(frames)
    await alice.close()


async def test_llm_a_refused_key_is_model_auth_in_health_and_one_log_line(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """The model server asks for a key (as a hosted API does) and the gateway has another: /health says
    `model_auth`, chats tell kb's message at once with that reason, and the log says it once."""
    need_model()
    server = ModelServer(log_path=str(tmp_path / "model-server.log"), api_key="sk-the-right-one").start()
    kb = gateway = None
    try:
        kb, gateway = await asyncio.to_thread(kb_and_gateway, nats_server, tmp_path, narrator_url=server.url,
                                              narrator_model="smollm2", narrator_api_key=SECRET_KEY)
        await wait_healthy(gateway.url)

        async def refused() -> bool:
            async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/health") as resp:
                return bool((await resp.json())["narrator"]["status"] == "model_auth")
        await eventually(refused, timeout=30)
        alice = await player(gateway, "alice")
        for line in ("go to the main room", "look", "sing to the moon"):
            done = [f async for f in alice.chat(line, timeout=30)][-1]
            assert (done["narrator"], done["reason"]) == ("fallback", "model_auth")
            assert done["total_time_ms"] < 1000
        await alice.close()
        logged = Path(gateway.log_path or "").read_text()
        assert logged.count("refused the API key") == 1 and "model_auth" in logged
        assert "WARNING gateway.chat" not in logged and SECRET_KEY not in logged
    finally:
        for proc in (gateway, kb):
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        server.stop()


async def test_llm_sigterm_ends_every_chat_in_flight_with_its_done(llm_system: System) -> None:
    _, gateway = await llm_system(shutdown_timeout_s="6", **LONG_ANSWER)
    frank = await player(gateway, "frank")
    ws_frames: list[dict[str, Any]] = []

    async def ws_chat() -> None:
        async for frame in frank.chat("go to the main room", timeout=60):
            ws_frames.append(frame)

    ws_task = asyncio.create_task(ws_chat())
    await eventually(lambda: len(ws_frames) > 2, timeout=60)  # the model is streaming frank's story
    # grace's request waits behind frank's on the model server (it answers one at a time)
    sse_task = asyncio.create_task(sse_chat(gateway, "grace", "go to the main room"))

    async def both_narrating() -> bool:
        return await metric(gateway, "gaia_gateway_narrator_requests_in_flight") == 2
    await eventually(both_narrating, timeout=30)
    assert gateway.proc is not None
    stopped = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(ws_task, 10)
    sse_frames = await asyncio.wait_for(sse_task, 10)
    assert ws_frames[-1]["type"] == "chat_done" and ws_frames[-1]["reason"] == "shutdown"
    end = [f for f in sse_frames if isinstance(f, dict) and f.get("type") == "metadata"][-1]
    assert end["narrator"] == "fallback" and end["reason"] == "shutdown"
    assert sse_frames[-1] == "[DONE]"
    assert await frank.wait_closed() == 1001
    await asyncio.to_thread(gateway.proc.wait, 10)
    assert time.monotonic() - stopped < 6 and gateway.proc.returncode == 0
