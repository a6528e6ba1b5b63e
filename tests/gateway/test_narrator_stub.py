"""The model narrator against a stand-in endpoint (harness/bench/floors/pacedllm.py) whose answers a test picks:
the guard, the proposal's deadline, a refused key, a hostile answer, other players as labels, and chat memory
under a flood. Named `llm` for `PYTEST_ADDOPTS='-k llm'`; they need no model."""
from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app as create_gateway
from gateway.chat import tools
from gateway.keys import CHAT
from gateway.keys import NATS as GW_NATS
from harness.bench.floors.pacedllm import create_app as create_stub
from harness.client.sse import read_events
from harness.client.ws import GaiaClient
from harness.system.procs import NatsServer, ServiceProcess, free_port, service_env, stop_process, wait_for_port
from shared.config import Settings
from tests.helpers import EXPERIENCE, eventually

FREE_FORM = "let the moon have what I carry"
Start = Callable[..., Awaitable[tuple[str, TestServer]]]


@pytest.fixture
async def stub_gateway(aiohttp_server: Any, gateway_settings: Settings) -> AsyncIterator[Start]:
    """start(stub={...}, **settings) -> (gateway base URL, the gateway's server) narrating with a stand-in."""
    async def start(stub: dict[str, Any] | None = None, **settings: Any) -> tuple[str, TestServer]:
        model = await aiohttp_server(create_stub(**{"first_token_s": 0.0, "tokens_per_s": 500.0, **(stub or {})}))
        values = {"narrator_url": str(model.make_url("/v1")), "narrator_model": "paced", **settings}
        server = await aiohttp_server(create_gateway(replace(gateway_settings, **values), "gwstub"))
        assert await server.app[GW_NATS].wait_ready(10)
        return str(server.make_url("")).rstrip("/"), server
    yield start


async def chat(base: str, token: str, line: str) -> tuple[str, dict[str, Any]]:
    async with GaiaClient(base, token, EXPERIENCE) as client:
        await client.next("area_of_interest")
        frames = [f async for f in client.chat(line, timeout=15)]
    return "".join(f.get("delta", "") for f in frames), frames[-1]


async def test_llm_guard_tells_kbs_message_instead_of_a_contradiction_or_a_leak(
        stub_gateway: Start, token: Callable[..., str]) -> None:
    for user, said, reason in (("ann", "You can't find it anywhere.", "model_contradiction"),
                               ("ben", "The world says: you walk in.", "model_leak"),
                               ("cat", "You step into the Main Room. The bottles hum softly.", None)):
        base, _ = await stub_gateway({"text": said})
        story, done = await chat(base, token(user), "go to the main room")
        assert done["action"] == "go" and done["success"] is True
        if reason is None:
            assert (done["narrator"], story) == ("model", said + " ")
        else:
            assert (done["narrator"], done["reason"]) == ("fallback", reason)
            assert story.startswith("You go to the Main Room.")  # kb's own words, nothing of the model's


async def test_llm_a_free_form_lines_proposal_waits_no_longer_than_the_first_token_deadline(
        stub_gateway: Start, token: Callable[..., str]) -> None:
    """An endpoint that never answers in time: the line goes as without a model (said to whoever is near)."""
    base, _ = await stub_gateway({"first_token_s": 30.0}, narrator_first_token_s=1.0)
    started = time.monotonic()
    story, done = await chat(base, token("alice"), FREE_FORM)
    assert time.monotonic() - started < 4.0  # 1 s for the proposal, then kb: not the whole-answer limit
    assert (done["action"], done["success"], done["narrator"]) == ("talk", True, "fallback")
    assert done["reason"] in ("model_timeout", "model_busy") and story.startswith("Nobody here answers")


async def test_llm_a_refused_key_is_model_auth_once_in_health_and_the_log(
        stub_gateway: Start, token: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    base, _ = await stub_gateway({"api_key": "sk-right"}, narrator_api_key="sk-wrong")

    async def refused() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as resp:
            narrator = (await resp.json())["narrator"]
        return bool(narrator["status"] == "model_auth" and narrator["kind"] == "model")
    await eventually(refused)
    for line in ("go to the main room", FREE_FORM, "look"):
        story, done = await chat(base, token("alice"), line)
        assert (done["narrator"], done["reason"]) == ("fallback", "model_auth") and story
        assert done["total_time_ms"] < 1000  # the model is not asked again
    complaints = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("gateway.chat")]
    assert len(complaints) == 1 and "refused the API key" in complaints[0].getMessage()
    assert "sk-wrong" not in caplog.text


async def test_llm_a_proposal_nested_1000_deep_still_ends_every_chat(
        stub_gateway: Start, token: Callable[..., str]) -> None:
    """Issue 38 (c): RecursionError in the proposal left the socket's chat without its end, cut SSE before
    [DONE] and answered stream:false with 500."""
    nested = '{"action": ' + "[" * 1000 + "]" * 1000 + "}"
    base, _ = await stub_gateway({"tool_arguments": nested})
    story, done = await chat(base, token("alice"), FREE_FORM)
    assert (done["type"], done["action"], done["reason"]) == ("chat_done", "talk", "model_no_action") and story
    headers = {"Authorization": f"Bearer {token('bob')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/chat/unified", json={"message": FREE_FORM, "experience": EXPERIENCE},
                             headers=headers) as resp:
            events = [e.data async for e in read_events(resp)]
        async with http.post(f"{base}/chat/unified", json={"message": FREE_FORM, "experience": EXPERIENCE,
                                                           "stream": False}, headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["action"] == "talk"
    end = orjson.loads(events[-3])
    assert events[-1] == "[DONE]" and (end["action"], end["success"], end["reason"]) == (
        "talk", True, "model_no_action")


def test_llm_what_a_model_proposes_is_read_only_so_far() -> None:
    deep = '{"action": "talk", "npc_id": ' + "[" * 400 + "]" * 400 + "}"
    assert tools.proposal(deep) is None and tools.proposal("[" * 5000) is None
    assert tools.proposal({"action": "go"}) is None  # not text at all
    assert tools.proposal('{"action": "go", "destination": "garden"}') == {"action": "go", "destination": "garden"}


async def test_llm_a_proposal_names_another_player_by_label_and_kb_gets_the_id(
        stub_gateway: Start, token: Callable[..., str]) -> None:
    give = '{"action": "give_item", "instance_id": "umbrella", "target_user_id": "player A"}'
    base, _ = await stub_gateway({"tool_arguments": give, "text": "You hand it over."})
    async with GaiaClient(base, token("alice"), EXPERIENCE) as alice, GaiaClient(base, token("bob"),
                                                                                EXPERIENCE) as bob:
        await alice.next("area_of_interest")
        await bob.next("area_of_interest")
        [f async for f in alice.chat("take umbrella", timeout=15)]
        for player in (alice, bob):  # kb keeps a player's state once they changed something
            [f async for f in player.chat("go to the main room", timeout=15)]

        async def bob_is_here() -> bool:
            return any(p["user_id"] == "bob" for p in (await alice.get_state())["players"])
        await eventually(bob_is_here, interval=1.0)  # kb announces presence per window
        done = [f async for f in alice.chat("let my friend keep what I carry", timeout=15)][-1]
        assert (done["action"], done["success"]) == ("give_item", True), done
        held = (await bob.get_state())["player"]["inventory"]
    assert [i["semantic_name"] for i in held] == ["umbrella"]


async def test_llm_chat_memory_of_a_flooding_user_stays_within_its_bytes(
        aiohttp_server: Any, settings: Settings, nats_server: NatsServer, tmp_path: Path,
        token: Callable[..., str]) -> None:
    """Issue 38 (a): 8 sockets of one user send maximal lines, each in a new conversation. Of everything the
    gateway process allocated during the flood (tracemalloc; kb and the model stand-in are processes of their
    own, the sockets real), what it still holds afterwards stays within the user's documented chat memory
    (GAIA_CHAT_HISTORY_USER_BYTES) plus SLACK for what any burst of traffic leaves (pooled buffers, caches).
    Kept as they came, the lines alone would be 3.2 MB."""
    kb = ServiceProcess("kb", free_port(), service_env(nats_server.url, 0, str(tmp_path / "kb.sqlite3")),
                        log_path=str(tmp_path / "kb.log"), nats_password=nats_server.passwords["kb"])
    kb.env["GAIA_KB_PORT"] = str(kb.port)
    model_port = free_port()
    model = subprocess.Popen([sys.executable, "-m", "harness.bench.floors.pacedllm", "--port", str(model_port),
                              "--first-token-s", "0", "--tokens-per-s", "500"])
    try:
        await asyncio.to_thread(kb.start)
        await asyncio.to_thread(wait_for_port, model_port, 15.0, model)
        gateway_settings = replace(settings, kb_url=kb.url, nats_user="gateway",
                                   nats_password=nats_server.passwords["gateway"],
                                   narrator_url=f"http://127.0.0.1:{model_port}/v1", narrator_model="paced")
        server = await aiohttp_server(create_gateway(gateway_settings, "gwflood"))
        assert await server.app[GW_NATS].wait_ready(10)
        base = str(server.make_url("")).rstrip("/")
        held = await held_after_flood(base, token("mallory"), sockets=8, lines_each=200)
    finally:
        await asyncio.to_thread(kb.stop)
        stop_process(model)
    bound = gateway_settings.chat_history_user_bytes
    book = server.app[CHAT].book
    assert 0 < book.user_total("mallory") <= bound and book.bytes <= gateway_settings.chat_history_bytes
    assert held <= bound + SLACK, f"{held} bytes still held after the flood"


# Measured: 300-380 KiB of connection, parser and loop state (aiohttp, openai, asyncio) outlive any burst;
# the book's own share is the user's bound. Kept as they came, 1,600 lines would hold 3.2 MB or more.
SLACK = 768 * 1024


async def held_after_flood(base: str, token: str, sockets: int, lines_each: int) -> int:
    """Bytes the process still holds, after a collection, of what it allocated during the flood."""
    line = "say " + "x" * 1996
    async with aiohttp.ClientSession() as http:
        url = base.replace("http", "ws", 1) + f"/ws/experience?experience={EXPERIENCE}&token={token}"
        conns = [await http.ws_connect(url, max_msg_size=0) for _ in range(sockets)]
        # Warm: every pool, cache and buffer a burst of chats fills, filled before the count starts.
        await asyncio.gather(*(flood(ws, line, 20, f"warm{i}") for i, ws in enumerate(conns)))
        gc.collect()
        tracemalloc.start()
        try:
            await asyncio.gather(*(flood(ws, line, lines_each, f"s{i}") for i, ws in enumerate(conns)))
            gc.collect()
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            for ws in conns:
                await ws.close()


async def flood(ws: aiohttp.ClientWebSocketResponse, line: str, count: int, prefix: str) -> None:
    """`count` chats of `line`, each in a new conversation, 4 in flight, at most 18 a second (the session's
    budget is 20); every frame read and dropped."""
    sent, done, in_flight = 0, 0, 0
    next_at = time.monotonic()
    while done < count:
        while sent < count and in_flight < 4 and time.monotonic() >= next_at:
            await ws.send_str(orjson.dumps({"type": "chat", "id": f"{prefix}-{sent}", "message": line,
                                            "conversation_id": f"{prefix}-{sent}"}).decode())
            sent, in_flight, next_at = sent + 1, in_flight + 1, next_at + 1 / 18
        try:
            message = await ws.receive(timeout=max(0.01, next_at - time.monotonic()) if sent < count else 15)
        except asyncio.TimeoutError:
            continue
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame = orjson.loads(message.data)
        assert frame["type"] != "error", frame
        if frame["type"] == "chat_done":
            done, in_flight = done + 1, in_flight - 1
