"""Legacy Server-Sent Events: the chat route (per-request subscription) and a persistent stream."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from marshmallow import ValidationError

from gateway.intents import parse_intent
from gateway.keys import GATEWAY_ID, KB, METRICS, REGISTRY, SETTINGS, STREAMS, VERIFIER
from gateway.kbclient import KbRejected, KbUnavailable
from shared.auth import Identity, TokenError, bearer_token
from shared.schemas import chat
from shared.schemas.errors import ErrorCode

log = logging.getLogger(__name__)
EVENT_WAIT_S = 2.0
_CHAT = chat.ChatRequestSchema()


def json_error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def authenticate(request: web.Request, allow_query: bool) -> Identity | web.Response:
    """Bearer header (or ?token= where EventSource cannot set headers); 401 otherwise."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and allow_query:
        token = request.query.get("token")
    try:
        return await request.app[VERIFIER].verify(token)
    except TokenError as exc:
        return json_error(401, "unauthorized", str(exc))


async def check_experience(request: web.Request, experience: str) -> web.Response | None:
    """403 for experiences outside the allow-list, 404 for ones kb does not serve."""
    allowed = request.app[SETTINGS].allowed_experiences
    if allowed and experience not in allowed:
        return json_error(403, "forbidden", "experience not allowed")
    known = await request.app[KB].experiences()
    if known is not None and experience not in known:
        return json_error(404, ErrorCode.UNKNOWN_EXPERIENCE, f"no experience called {experience[:64]!r}")
    return None


def sse_count(request: web.Request, user_id: str) -> int:
    return sum(1 for s in request.app[REGISTRY].sessions.values() if s.transport == "sse" and s.user_id == user_id)


class ChatEvents:
    """Sink for the chat route's per-request stream: events wait in a queue for the handler."""

    transport = "chat"

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[tuple[int, bytes, dict[str, Any]]] = asyncio.Queue(limit)
        self.overflowed = False

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((seq, frame, event))
        except asyncio.QueueFull:
            self.overflowed = True

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        pass

    def on_resync(self, reason: str) -> None:
        pass  # a chat request streams only what its own action causes from now on

    def room(self) -> int:
        return self.queue.maxsize - self.queue.qsize()


class ChatStream:
    """One POST /chat/unified: subscribe first, act, stream events, then the narrative."""

    transport = "sse"

    def __init__(self, request: web.Request, identity: Identity, body: dict[str, Any]) -> None:
        app = request.app
        self.request = request
        self.settings = app[SETTINGS]
        self.kb = app[KB]
        self.metrics = app[METRICS]
        self.user_id = identity.user_id
        self.experience = body["experience"]
        self.body = body
        self.conn_id = f"{app[GATEWAY_ID]}-chat-{uuid.uuid4().hex[:10]}"
        self.events = ChatEvents(self.settings.session_outbox_size)
        self.streams = app[STREAMS]
        self.stream = self.streams.new(self.user_id, self.experience, self.conn_id, self.events)
        self.resp: EventSourceResponse | None = None
        self.started = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.last_version = -1

    async def shutdown(self, code: int, reason: str) -> None:
        if self.resp is not None:
            self.resp.stop_streaming()

    async def send(self, frame: dict[str, Any] | bytes, event_id: int | None = None) -> None:
        assert self.resp is not None
        data = frame.decode() if isinstance(frame, bytes) else orjson.dumps(frame).decode()
        await self.resp.send(data, id=str(event_id) if event_id is not None else None)

    async def run(self) -> None:
        """The whole exchange; the subscription is gone when this returns, whatever happened."""
        registry = self.request.app[REGISTRY]
        registry.add(self)
        try:
            async with sse_response(self.request, ping_interval=self.settings.sse_keepalive_s,
                                    allow_all_methods=True) as resp:
                self.resp = resp
                await self._exchange()
        except (ConnectionResetError, asyncio.CancelledError):
            log.info("[%s] client went away mid-stream", self.conn_id)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.streams.discard(self.stream))
            registry.remove(self)

    async def _exchange(self) -> None:
        await self.send(chat.start_metadata(self.body["conversation_id"]))
        try:
            await self.stream.open(None)
        except Exception as exc:  # noqa: BLE001 - no bus: the narrative still comes, events do not
            log.warning("[%s] no event stream for this request (%s)", self.conn_id, type(exc).__name__)
        args = parse_intent(self.body["message"])
        try:
            result = await self._act_while_forwarding(args)
        except KbUnavailable:
            await self._fail(ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again")
            return
        except KbRejected as exc:
            await self._fail(exc.body.get("error", ErrorCode.INVALID_MESSAGE), str(exc))
            return
        if result["changes"]:
            await self._forward_until(result["snapshot_version"], time.monotonic() + EVENT_WAIT_S)
        await self._forward_ready()
        for piece in chat.narrative_chunks(result["message"]):
            if self.first_chunk_at is None:
                self.first_chunk_at = time.perf_counter()
            await self.send(chat.completion_chunk(self.body["conversation_id"], piece))
        await self._finish("stop")

    async def _act_while_forwarding(self, args: dict[str, Any]) -> dict[str, Any]:
        """Send the action; forward events the moment they arrive, even before kb answers."""
        action = asyncio.ensure_future(self.kb.act(self.experience, self.user_id, args, self.conn_id))
        started = time.perf_counter()
        try:
            while not action.done():
                getter = asyncio.ensure_future(self.events.queue.get())
                await asyncio.wait({getter, action}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await self._forward(*getter.result())
                else:
                    getter.cancel()
            result = action.result()
            self.metrics.action_seconds.labels("chat").observe(time.perf_counter() - started)
            return result
        finally:
            action.cancel()

    async def _forward(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        if event["type"] == "world_update":
            self.last_version = max(self.last_version, event["snapshot_version"])
        await self.send(frame, seq)

    async def _forward_until(self, version: int, deadline: float) -> None:
        """Wait (briefly) for this action's own world_update so it precedes the narrative."""
        while self.last_version < version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("[%s] world_update v%d not seen within %.1fs", self.conn_id, version, EVENT_WAIT_S)
                return
            try:
                item = await asyncio.wait_for(self.events.queue.get(), remaining)
            except asyncio.TimeoutError:
                continue
            await self._forward(*item)

    async def _forward_ready(self) -> None:
        while not self.events.queue.empty():
            await self._forward(*self.events.queue.get_nowait())

    async def _fail(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})
        await self._finish("error")

    async def _finish(self, reason: str) -> None:
        now = time.perf_counter()
        first = (self.first_chunk_at or now) - self.started
        await self.send(chat.end_metadata(first * 1000, (now - self.started) * 1000))
        await self.send(chat.done(reason))
        assert self.resp is not None
        await self.resp.send("[DONE]")


async def chat_unified(request: web.Request) -> web.StreamResponse:
    """POST /chat/unified: a chat line becomes an action; its events stream before the narrative."""
    identity = await authenticate(request, allow_query=False)
    if isinstance(identity, web.Response):
        return identity
    try:
        body = _CHAT.load(orjson.loads(await request.read()))
    except orjson.JSONDecodeError as exc:
        return json_error(400, ErrorCode.INVALID_JSON, f"body is not valid JSON: {exc}")
    except ValidationError as exc:
        return json_error(422, ErrorCode.INVALID_MESSAGE, "body does not match its schema", exc.messages)
    except TypeError:
        return json_error(422, ErrorCode.INVALID_MESSAGE, "body must be a JSON object")
    refused = await check_experience(request, body["experience"])
    if refused is not None:
        return refused
    if not body["stream"]:
        return await _chat_once(request, identity, body)
    chat_stream = ChatStream(request, identity, body)
    await chat_stream.run()
    return chat_stream.resp or web.Response(status=499)


async def _chat_once(request: web.Request, identity: Identity, body: dict[str, Any]) -> web.Response:
    """`"stream": false`: one JSON answer, no events (they arrive on the persistent stream)."""
    try:
        result = await request.app[KB].act(body["experience"], identity.user_id, parse_intent(body["message"]),
                                           body["conversation_id"])
    except KbUnavailable:
        return json_error(503, ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again")
    return web.Response(content_type="application/json", body=orjson.dumps({
        "conversation_id": body["conversation_id"], "model": chat.MODEL, "success": result["success"],
        "message": result["message"], "snapshot_version": result["snapshot_version"]}))
