"""Chat on the WebSocket, through the same pipeline as SSE: events first, then the narrative, by id."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.client.sse import read_events
from harness.client.ws import ChatError, GaiaClient
from tests.helpers import ADMIN, EXPERIENCE


def kinds_for(client: GaiaClient, chat_id: str) -> list[str]:
    """The frame types of one chat, in arrival order, with its world_updates where they came."""
    return [f["type"] for f in client.frames if f.get("id") == chat_id or f["type"] == "world_update"]


@pytest.mark.also_with_send_tick
async def test_take_over_the_socket_world_update_before_the_first_chunk_then_done(players) -> None:
    alice = await players("alice")
    said = [f async for f in alice.chat("go to main room")]
    assert said[-1]["type"] == "chat_done" and said[-1]["success"] and said[-1]["action"] == "go"
    frames = [f async for f in alice.chat("take dream bottle")]
    chunks, done = frames[:-1], frames[-1]
    assert "".join(c["delta"] for c in chunks) == "You take the dream bottle."
    assert done["success"] and done["action"] == "collect_item" and done["total_time_ms"] >= done["time_to_first_chunk_ms"]
    assert all(f["conversation_id"] == done["conversation_id"] for f in frames)
    order = [f for f in alice.frames if f is chunks[0] or (f["type"] == "world_update" and f["changes"]
                                                              and f["changes"][0].get("instance_id") == "dream_bottle_1")]
    assert order[0]["type"] == "world_update" and order[1] is chunks[0], "the bottle's update precedes the narrative"


async def test_a_bad_chat_gets_an_error_with_its_id_and_the_session_lives(players) -> None:
    alice = await players("alice")
    await alice.send({"type": "chat", "id": "c-bad", "message": ""})
    error = await alice.next("error")
    assert error["id"] == "c-bad" and error["code"] == "invalid_message" and "message" in error["details"]
    assert await alice.ping() > 0


@pytest.mark.also_with_send_tick
async def test_many_chats_in_flight_each_keep_their_own_order(players) -> None:
    alice = await players("alice")

    async def say(line: str) -> list[dict]:
        return [f async for f in alice.chat(line)]
    answers = await asyncio.gather(say("go to main room"), say("look"), say("inventory"), say("look around"))
    for frames in answers:
        assert [f["type"] for f in frames][-1] == "chat_done"
        assert len({f["id"] for f in frames}) == 1 and all(f["type"] == "chat_chunk" for f in frames[:-1])


async def test_it_and_there_refer_to_what_the_conversation_named(players) -> None:
    alice = await players("alice")
    [f async for f in alice.chat("go to main room", conversation_id="t1")]
    [f async for f in alice.chat("take dream bottle", conversation_id="t1")]
    dropped = [f async for f in alice.chat("drop it", conversation_id="t1")]
    assert dropped[-1]["action"] == "drop_item" and dropped[-1]["success"]  # "it" alone names nothing kb knows
    other = [f async for f in alice.chat("take it", conversation_id="t2")]
    assert not other[-1]["success"], "another conversation has no 'it'"


async def test_a_chat_whose_kb_call_fails_gets_kb_unavailable_with_its_id(aiohttp_server, gateway_settings,
                                                                          token) -> None:
    dead_kb = replace(gateway_settings, kb_url="http://127.0.0.1:9", kb_timeout_s=1.0)
    server = await aiohttp_server(create_gateway(dead_kb, "gwnokb"))
    assert await server.app[GW_NATS].wait_ready(10)
    alice = GaiaClient(str(server.make_url("")).rstrip("/"), token("alice"), EXPERIENCE)
    await alice.connect()
    with pytest.raises(ChatError) as failed:
        [f async for f in alice.chat("take dream bottle")]
    assert failed.value.frame["code"] == "kb_unavailable" and failed.value.frame["id"].startswith("c")
    assert await alice.ping() > 0
    await alice.close()


async def test_the_same_chat_over_sse_yields_the_same_events_and_text(players, gateway_server, token) -> None:
    alice, bob = await players("alice"), await players("bob")
    [f async for f in alice.chat("go to main room")]
    ws_text = "".join([f.get("delta", "") async for f in alice.chat("take dream bottle")])
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('bob')}"},
                             json={"message": "go to main room", "experience": EXPERIENCE}) as resp:
            [e async for e in read_events(resp)]
        async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('bob')}"},
                             json={"message": "take dream bottle", "experience": EXPERIENCE}) as resp:
            events = [e async for e in read_events(resp)]
    frames = [e.json() for e in events if e.data != "[DONE]"]
    kinds = [f.get("type") or f.get("object") for f in frames]
    assert "world_update" in kinds[:kinds.index("chat.completion.chunk")]
    sse_text = "".join(f["choices"][0]["delta"]["content"] for f in frames if f.get("object"))
    assert ws_text == sse_text == "You take the dream bottle."
    end = [f for f in frames if f.get("type") == "metadata"][-1]  # what chat_done says, SSE's end says too
    assert (end["action"], end["success"], end["narrator"]) == ("collect_item", True, "builtin")
    await bob.close()


async def test_metrics_count_chats_and_users_by_transport(players, gateway_server, token) -> None:
    alice = await players("alice")
    [f async for f in alice.chat("look")]
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('sam')}"},
                             json={"message": "look", "experience": EXPERIENCE, "stream": False}) as resp:
            assert (await resp.json())["action"] == "examine"
        async with http.get(gateway_server.make_url("/metrics"), headers=ADMIN) as resp:
            text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("gaia_gateway_chats_total", (("transport", "websocket"),))] == 1
    assert samples[("gaia_gateway_chats_total", (("transport", "sse"),))] == 1
    assert samples[("gaia_gateway_users_last_hour", (("transport", "websocket"),))] == 1
    assert samples[("gaia_gateway_users_last_hour", (("transport", "sse"),))] == 1
