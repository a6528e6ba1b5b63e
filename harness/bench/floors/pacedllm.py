"""A paced stand-in for an OpenAI-compatible chat-completions server: canned tokens at a model's pace.

For the narrative-load benchmark only (harness/bench/chat.py): on two cores a real model's own CPU would
swamp the real-time figure it measures, so this server answers like a hosted model does from the
gateway's point of view (first token after `--first-token-s`, then `--tokens-per-s`) at almost no CPU.
`python -m harness.bench.floors.pacedllm --port 8090` serves it; a tool call always proposes `examine`.
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

WORDS = ("The shelves creak as you look around; bottles hum softly in colours you cannot name, and somewhere "
         "behind the counter a moth turns the page of an old ledger while the bell above the door still rings "
         "its unfinished note across the quiet shop").split()
FIRST_TOKEN_S = web.AppKey("first_token_s", float)
TOKENS_PER_S = web.AppKey("tokens_per_s", float)
TOKENS = web.AppKey("tokens", int)


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: streamed canned text at the configured pace, or one tool call."""
    body = await request.json(loads=orjson.loads)
    app, model, completion_id = request.app, body.get("model", "paced"), f"chatcmpl-{uuid.uuid4().hex[:12]}"
    count = min(int(body.get("max_tokens") or app[TOKENS]), app[TOKENS])
    await asyncio.sleep(app[FIRST_TOKEN_S])
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(WORDS[:count])}
        if body.get("tools"):
            call = {"id": "call_0", "type": "function",
                    "function": {"name": body["tools"][0]["function"]["name"], "arguments": '{"action": "examine"}'}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        answer = {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    started, gap = time.monotonic(), 1.0 / app[TOKENS_PER_S]
    await resp.write(_chunk(completion_id, model, {"role": "assistant", "content": ""}))
    for i in range(count):
        delay = started + i * gap - time.monotonic()  # paced against the clock, not sleep after sleep
        if delay > 0:
            await asyncio.sleep(delay)
        await resp.write(_chunk(completion_id, model, {"content": WORDS[i % len(WORDS)] + " "}))
    await resp.write(_chunk(completion_id, model, {}, "stop") + b"data: [DONE]\n\n")
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "paced", "object": "model"}]})


def create_app(first_token_s: float = 0.3, tokens_per_s: float = 30.0, tokens: int = 60) -> web.Application:
    app = web.Application()
    app[FIRST_TOKEN_S], app[TOKENS_PER_S], app[TOKENS] = first_token_s, tokens_per_s, tokens
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--first-token-s", type=float, default=0.3)
    parser.add_argument("--tokens-per-s", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer (at most max_tokens)")
    args = parser.parse_args(argv)
    web.run_app(create_app(args.first_token_s, args.tokens_per_s, args.tokens), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
