"""The benchmark's paced stand-in speaks the chat-completions protocol (through the openai client) at its pace."""
from __future__ import annotations

import time
from typing import Any

from openai import AsyncOpenAI

from gateway.chat import tools
from harness.bench.floors.pacedllm import create_app


async def test_paced_stand_in_streams_at_its_pace_and_calls_the_tool(aiohttp_server: Any) -> None:
    server = await aiohttp_server(create_app(first_token_s=0.3, tokens_per_s=30.0, tokens=10))
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
    started, first, pieces = time.perf_counter(), None, []
    stream = await client.chat.completions.create(model="paced", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, max_tokens=100)
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                pieces.append(chunk.choices[0].delta.content)
    done = time.perf_counter()
    assert len(pieces) == 10 and first is not None
    # never faster than the pace (slower only if busy); 20 ms for the first piece arriving later than sent
    assert first - started >= 0.3 and done - first >= 9 / 30 - 0.02
    answer = await client.chat.completions.create(model="paced", messages=[{"role": "user", "content": "hi"}],
                                                  tools=[tools.act_tool()], tool_choice=tools.forced_choice())
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert tools.proposal(call.function.arguments) == {"action": "examine"}  # type: ignore[union-attr]
    await client.close()
