"""Who wrote the story, without a model server: `builtin` with no model configured, `fallback` with
`model_unavailable` when the configured one is down; the world change arrives either way."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from gateway.app import create_app as create_gateway
from gateway.keys import NATS as GW_NATS
from harness.client.sse import read_events
from harness.client.ws import GaiaClient
from harness.system.procs import free_port
from shared.config import Settings
from tests.helpers import ADMIN, EXPERIENCE


async def test_chat_done_says_builtin_without_a_model(players: Callable[..., Any]) -> None:
    alice = await players("alice")
    frames = [f async for f in alice.chat("go to the main room")]
    done = frames[-1]
    assert done["narrator"] == "builtin" and "reason" not in done and done["success"] is True
    assert "".join(f["delta"] for f in frames[:-1]).startswith("You")


async def test_model_down_world_change_still_arrives_and_story_is_kbs(
        aiohttp_server: Any, gateway_settings: Settings, token: Callable[..., str]) -> None:
    settings = replace(gateway_settings, narrator_url=f"http://127.0.0.1:{free_port()}/v1", narrator_model="m",
                       narrator_first_token_s=3.0)
    server: TestServer = await aiohttp_server(create_gateway(settings, "gwdown"))
    assert await server.app[GW_NATS].wait_ready(10)
    base = str(server.make_url("")).rstrip("/")
    async with GaiaClient(base, token("bob"), EXPERIENCE) as bob:
        await bob.next("area_of_interest")
        frames = [f async for f in bob.chat("go to the main room")]
        answer = await bob.act("go", destination="entrance")
    done = frames[-1]
    assert (done["narrator"], done["reason"], done["success"], done["action"]) == (
        "fallback", "model_unavailable", True, "go")
    kinds = [f["type"] for f in bob.frames]
    assert kinds.index("world_update") < kinds.index("chat_chunk")
    assert answer["success"] is True  # the world goes on

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/chat/unified", json={"message": "go to the main room", "experience": EXPERIENCE},
                             headers={"Authorization": f"Bearer {token('bob')}"}) as resp:
            events = [e.data async for e in read_events(resp)]
        async with http.get(f"{base}/metrics", headers=ADMIN) as resp:
            metrics = await resp.text()
    end = orjson.loads(events[-3])
    assert (end["type"], end["narrator"], end["reason"]) == ("metadata", "fallback", "model_unavailable")
    assert events[-1] == "[DONE]" and orjson.loads(events[0])["model"] == "m"
    assert 'gaia_gateway_narrator_answers_total{narrator="fallback",reason="model_unavailable"} 2.0' in metrics
    assert "gaia_gateway_narrator_requests_in_flight 0.0" in metrics
