"""Legacy SSE beside the WebSocket: chat streams events before narrative; Last-Event-ID resumes exactly."""
from __future__ import annotations

import asyncio

import aiohttp
import orjson

from gateway.keys import STREAMS
from harness.client.sse import read_events
from kb.keys import PRESENCE as KB_PRESENCE
from tests.helpers import EXPERIENCE, eventually, outbox_drained


async def chat(http, gateway_server, token, message: str) -> list:
    async with http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token}"},
                         json={"message": message, "experience": EXPERIENCE, "stream": True}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        return [event async for event in read_events(resp)]


async def test_chat_take_streams_world_update_before_narrative_and_ws_player_sees_it(
        gateway_server, kb_server, players, token) -> None:
    watcher = await players("wendy")
    await eventually(lambda: "wendy" in kb_server.app[KB_PRESENCE].present_users(EXPERIENCE))
    async with aiohttp.ClientSession() as http:
        await chat(http, gateway_server, token("sam"), "go to the main room")
        events = await chat(http, gateway_server, token("sam"), "take dream bottle")
    frames = [e.json() if e.data != "[DONE]" else "[DONE]" for e in events]
    kinds = [f if f == "[DONE]" else f.get("type") or f.get("object") for f in frames]
    assert kinds[0] == "metadata" and frames[0]["conversation_id"]
    first_chunk = kinds.index("chat.completion.chunk")
    assert "world_update" in kinds[:first_chunk], kinds
    assert kinds[-3:] == ["metadata", "done", "[DONE]"] and frames[-2]["finish_reason"] == "stop"
    assert frames[-3]["total_time_ms"] >= frames[-3]["time_to_first_chunk_ms"] >= 0
    update = next(f for f in frames if f != "[DONE]" and f.get("type") == "world_update")
    assert events[kinds.index("world_update")].id == str(update["seq"])
    narrative = "".join(f["choices"][0]["delta"]["content"] for f in frames[first_chunk:-3])
    assert narrative == "You take the dream bottle."
    seen = await watcher.next("world_update")
    while seen["actor_id"] != "sam" or not seen["changes"]:
        seen = await watcher.next("world_update")
    assert seen["changes"] == [{"operation": "remove", "area_id": "main_room", "spot_id": "shelf_1",
                                "instance_id": "dream_bottle_1"}]
    assert watcher.world.view["areas"]["main_room"]["spots"]["shelf_1"]["items"] == []


async def test_chat_failure_is_said_in_the_narrative(gateway_server, token) -> None:
    async with aiohttp.ClientSession() as http:
        events = await chat(http, gateway_server, token("sam"), "take the unicorn")
    narrative = "".join(e.json()["choices"][0]["delta"]["content"] for e in events
                        if e.data.startswith('{"id"'))
    assert narrative == "There is no unicorn here."


async def test_chat_with_kb_down_ends_with_an_error_chunk_not_a_hang(gateway_server, kb_server, token) -> None:
    await kb_server.close()
    async with aiohttp.ClientSession() as http:
        events = await asyncio.wait_for(chat(http, gateway_server, token("sam"), "look"), 20)
    frames = [e.json() for e in events[:-1]]
    assert frames[1] == {"type": "error", "code": "kb_unavailable",
                         "message": "the world service is unavailable; try again"}
    assert frames[-1] == {"type": "done", "finish_reason": "error"} and events[-1].data == "[DONE]"


async def test_chat_rejects_bad_requests_with_json_errors(gateway_server, token) -> None:
    url = gateway_server.make_url("/chat/unified")
    auth = {"Authorization": f"Bearer {token('sam')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"message": "hi", "experience": EXPERIENCE}) as r:
            assert r.status == 401
        async with http.post(url, data=b"{", headers=auth) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_json"
        async with http.post(url, json={"experience": EXPERIENCE}, headers=auth) as r:
            assert r.status == 422 and "message" in (await r.json())["details"]
        async with http.post(url, json={"message": "hi", "experience": "atlantis"}, headers=auth) as r:
            assert r.status == 404


async def test_client_leaving_mid_stream_leaves_no_subscription(gateway_server, nats_server, token) -> None:
    async def chat_subs() -> list[str]:
        return [s for s in await nats_server.subscriptions() if s == f"live.world.updates.exp.{EXPERIENCE}"]

    async with aiohttp.ClientSession() as http:
        resp = await http.post(gateway_server.make_url("/chat/unified"), headers={"Authorization": f"Bearer {token('sam')}"},
                               json={"message": "look", "experience": EXPERIENCE})
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        resp.close()  # the client vanishes with the stream still open
    await eventually(lambda: _none(chat_subs()))
    assert not gateway_server.app[STREAMS].streams


async def _none(coro) -> bool:
    return not await coro


async def test_persistent_stream_resumes_with_last_event_id_exactly(gateway_server, kb_server, kb_http, token,
                                                                   nats_server) -> None:
    url = gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}")
    auth = {"Authorization": f"Bearer {token('rita')}"}
    act_url = str(kb_server.make_url(f"/experiences/{EXPERIENCE}/actions"))

    async def act(destination: str) -> None:
        async with kb_http.post(act_url, json={"user_id": "rita", "action": "go", "destination": destination}) as r:
            assert (await r.json())["success"]

    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=auth) as resp:
            events = read_events(resp)
            await eventually(lambda: _some(nats_server, f"live.world.updates.exp.{EXPERIENCE}"))
            await act("main_room")
            first = await asyncio.wait_for(events.__anext__(), 5)
            assert first.json()["type"] == "world_update" and first.id == str(first.json()["seq"])
        for place in ("counter", "main_room", "back_room"):
            await act(place)  # while the client is away
        await outbox_drained(kb_server)  # all three are in the stream before we resume
        async with http.get(url, headers={**auth, "Last-Event-ID": first.id}) as resp:
            events = read_events(resp)
            got = [await asyncio.wait_for(events.__anext__(), 5) for _ in range(4)]
    replayed = [e.json() for e in got[:3]]
    assert [u["changes"][0]["value"] for u in replayed] == ["counter", "main_room", "back_room"]
    assert [int(e.id) for e in got[:3]] == sorted({int(e.id) for e in got[:3]})
    assert int(got[0].id) > int(first.id)
    resumed = got[3].json()
    assert (resumed["type"], resumed["from_seq"], resumed["replayed"]) == ("resumed", int(first.id) + 1, 3)
    assert resumed["to_seq"] >= int(got[2].id) and got[3].id is None


async def _some(nats_server, prefix: str) -> bool:
    return any(s.startswith(prefix) for s in await nats_server.subscriptions())


async def test_sse_streams_count_in_health(gateway_server, token) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('ian')}")):
            async def counted() -> bool:
                async with http.get(gateway_server.make_url("/health")) as r:
                    return (await r.json())["sessions"]["sse"] == 1
            await eventually(counted)


async def preamble(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """The fields of the stream's first block (before any event)."""
    fields: dict[str, str] = {}
    while (line := (await resp.content.readline()).decode().rstrip("\r\n")):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


async def test_a_quiet_stream_has_its_cursor_and_a_jittered_retry_before_any_event(
        gateway_server, kb_server, kb_http, token, settings) -> None:
    act_url = str(kb_server.make_url(f"/experiences/{EXPERIENCE}/actions"))
    async with kb_http.post(act_url, json={"user_id": "quinn", "action": "go", "destination": "main_room"}) as r:
        assert (await r.json())["success"]
    await outbox_drained(kb_server)
    url = gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={token('rita')}")
    retries = set()
    async with aiohttp.ClientSession() as http:
        for _ in range(8):
            async with http.get(url) as resp:
                first = await preamble(resp)
            assert "data" not in first  # sets lastEventId without firing a message
            assert int(first["id"]) >= 1  # quinn's move is in the stream: the cursor is already past it
            retries.add(int(first["retry"]))
    assert all(settings.sse_retry_ms <= r < 2 * settings.sse_retry_ms for r in retries) and len(retries) > 1


async def test_a_stream_whose_token_expires_ends_with_a_token_expired_event(gateway_server, settings) -> None:
    from shared.auth import issue_token
    short = issue_token(settings, "tess", ttl_s=1.0 - settings.jwt_leeway_s)  # expires (with leeway) in 1 s
    url = gateway_server.make_url(f"/sse/experience?experience={EXPERIENCE}&token={short}")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            lines = (await asyncio.wait_for(resp.content.read(), 10)).decode().splitlines()
    assert "event: token_expired" in lines
    data = orjson.loads(lines[lines.index("event: token_expired") + 1].removeprefix("data: "))
    assert data["type"] == "error" and data["code"] == "token_expired"
    async with aiohttp.ClientSession() as http:  # and the browser's reconnect is refused
        async with http.get(url) as resp:
            assert resp.status == 401
