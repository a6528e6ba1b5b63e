"""A paced stand-in for an OpenAI-compatible chat-completions server: canned tokens at a model's pace.

For the narrative-load benchmark (harness/bench/chat.py): on two cores a real model's own CPU would
swamp the real-time figure it measures, so this server answers like a hosted model does from the
gateway's point of view (first token after `--first-token-s`, then `--tokens-per-s`) at almost no CPU.
`python -m harness.bench.floors.pacedllm --port 8090` serves it; a tool call proposes `--tool-arguments`
(`examine`). Tests also make it say a given story (`text`), answer a tool call with any string, even
hostile nesting, or refuse every request without `--api-key` as a hosted API does (401).
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

# A story the gateway's guard lets through for "look around" at the entrance (where a new player stands).
STORY = ("You look around the Entrance, where the bell above the door still rings. Bottles hum softly in colours of "
         "every kind. A moth turns the page of an old ledger. The bell rings its long note across the quiet shop.")
WORDS = tuple(STORY.split())
EXAMINE = '{"action": "examine"}'
FIRST_TOKEN_S = web.AppKey("first_token_s", float)
TOKENS_PER_S = web.AppKey("tokens_per_s", float)
TOKENS = web.AppKey("tokens", int)
TEXT = web.AppKey("text", tuple)
TOOL_ARGUMENTS = web.AppKey("tool_arguments", str)
API_KEY = web.AppKey("api_key", str)
STATS = web.AppKey("stats", dict)  # requests answered, and the most open at once (GET /stats)


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: streamed canned text at the configured pace, or one tool call."""
    if refused := _refused(request):
        return refused
    body = await request.json(loads=orjson.loads)
    app, model, completion_id = request.app, body.get("model", "paced"), f"chatcmpl-{uuid.uuid4().hex[:12]}"
    if not body.get("stream"):
        return await _answer(request, body, model, completion_id)
    stats = app[STATS]  # streamed stories only: a gateway's one-token warm-up is not a story
    stats["requests"] += 1
    stats["open"] += 1
    stats["most_at_once"] = max(stats["most_at_once"], stats["open"])
    try:
        return await _answer(request, body, model, completion_id)
    finally:
        stats["open"] -= 1


async def _answer(request: web.Request, body: dict[str, Any], model: str, completion_id: str) -> web.StreamResponse:
    app = request.app
    words = app[TEXT]
    count = min(int(body.get("max_tokens") or app[TOKENS]), app[TOKENS], len(words))
    finish = "length" if count < min(app[TOKENS], len(words)) else "stop"
    await asyncio.sleep(app[FIRST_TOKEN_S])
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words[:count])}
        if body.get("tools"):
            call = {"id": "call_0", "type": "function",
                    "function": {"name": body["tools"][0]["function"]["name"], "arguments": app[TOOL_ARGUMENTS]}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        answer = {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    started, gap = time.monotonic(), 1.0 / app[TOKENS_PER_S]
    await resp.write(_chunk(completion_id, model, {"role": "assistant", "content": ""}))
    try:
        for i in range(count):
            delay = started + i * gap - time.monotonic()  # paced against the clock, not sleep after sleep
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(_chunk(completion_id, model, {"content": words[i] + " "}))
        await resp.write(_chunk(completion_id, model, {}, finish) + b"data: [DONE]\n\n")
    except ConnectionResetError:  # the client had enough (a story stops after its sentences): as a server does
        pass
    return resp


def _refused(request: web.Request) -> web.Response | None:
    """401 as OpenAI answers a wrong key, when this stand-in has a key and the request's differs."""
    key = request.app[API_KEY]
    if not key or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    error = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                       "code": "invalid_api_key"}}
    return web.json_response(error, status=401)


async def stats(request: web.Request) -> web.Response:
    """GET /stats: how many streamed requests came, and the most open at once (a cap's test reads it)."""
    return web.json_response(request.app[STATS])


async def models(request: web.Request) -> web.Response:
    if refused := _refused(request):
        return refused
    return web.json_response({"object": "list", "data": [{"id": "paced", "object": "model"}]})


def create_app(first_token_s: float = 0.3, tokens_per_s: float = 30.0, tokens: int = 60, text: str = STORY,
               tool_arguments: str = EXAMINE, api_key: str = "") -> web.Application:
    app = web.Application()
    app[FIRST_TOKEN_S], app[TOKENS_PER_S], app[TOKENS] = first_token_s, tokens_per_s, tokens
    app[TEXT], app[TOOL_ARGUMENTS], app[API_KEY] = tuple(text.split()), tool_arguments, api_key
    app[STATS] = {"requests": 0, "open": 0, "most_at_once": 0}
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--first-token-s", type=float, default=0.3)
    parser.add_argument("--tokens-per-s", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer (at most max_tokens)")
    parser.add_argument("--text", default=STORY, help="the story, a word per token")
    parser.add_argument("--tool-arguments", default=EXAMINE, help="what a tool call answers, verbatim")
    parser.add_argument("--api-key", default="", help="refuse (401) every request without this bearer key")
    args = parser.parse_args(argv)
    web.run_app(create_app(args.first_token_s, args.tokens_per_s, args.tokens, args.text, args.tool_arguments,
                           args.api_key), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
