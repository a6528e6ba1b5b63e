"""POST /chat/unified: a chat line over Server-Sent Events, its action's events streamed before the narrative."""
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

from gateway.chat import schema as chat
from gateway.edge.admission import Refusal
from gateway.keys import CHAT, CHAT_LIMITS, EDGE, GATEWAY_ID, METRICS, REGISTRY, SETTINGS, STREAMS
from shared.auth import Identity
from shared.schemas.errors import ErrorCode
from shared.schemas.messages import error_frame
from shared.service.problems import problem
from shared.service.tasks import wait_event

log = logging.getLogger(__name__)
_CHAT = chat.ChatRequestSchema()
CLIENT_CHECK_S = 0.1  # how often a chat in flight looks whether its client is still connected


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

    def on_stalled(self) -> None:
        self.overflowed = True


class ChatStream:
    """One POST /chat/unified: subscribe first, then the shared chat pipeline; events are forwarded as
    they come by a task of their own, the narrative after the action's own world_update."""

    transport = "sse"

    def __init__(self, request: web.Request, identity: Identity, body: dict[str, Any]) -> None:
        app = request.app
        self.request = request
        self.settings = app[SETTINGS]
        self.chat = app[CHAT]
        self.user_id = identity.user_id
        self.experience = body["experience"]
        self.body = body
        self.conn_id = f"{app[GATEWAY_ID]}-chat-{uuid.uuid4().hex[:10]}"
        self.events = ChatEvents(self.settings.session_send_queue_size)
        self.streams = app[STREAMS]
        self.stream = self.streams.new(self.user_id, self.experience, self.conn_id, self.events)
        self.resp: EventSourceResponse | None = None
        self.last_version = -1
        self._progress = asyncio.Event()

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
        conversation = self.body["conversation_id"]
        await self.send(chat.start_metadata(conversation, self.chat.narrator.model))
        try:
            await self.stream.open(None)
        except Exception as exc:  # noqa: BLE001 - no bus: the narrative still comes, events do not
            log.warning("[%s] no event stream for this request (%s)", self.conn_id, type(exc).__name__)
        self.request.app[METRICS].chat_seen("sse", self.user_id)
        forwarder = asyncio.create_task(self._forward_events())
        talk = asyncio.create_task(self.chat.run(self.user_id, self.experience, self.body["message"], conversation,
                                                 self.conn_id, self))
        watcher = asyncio.create_task(self._cancel_when_gone(talk))
        try:
            outcome = await talk
        finally:
            for task in (forwarder, watcher, talk):
                task.cancel()
            await asyncio.gather(forwarder, watcher, talk, return_exceptions=True)
        await self._forward_ready()
        if outcome.error is not None:
            await self.send(error_frame(*outcome.error, details=outcome.details))
        await self.send(chat.end_metadata(outcome.first_chunk_ms, outcome.total_ms, outcome.narrator, outcome.reason,
                                          outcome.action, outcome.success))
        await self.send(chat.done("error" if outcome.error else "stop"))
        assert self.resp is not None
        await self.resp.send("[DONE]")

    async def _cancel_when_gone(self, talk: asyncio.Task[Any]) -> None:
        """The client went away: cancel the chat (and its model request) now, not at the next write.

        aiohttp tells a handler nothing when its client leaves (no handler cancellation here), so the
        connection is looked at every CLIENT_CHECK_S while the chat runs.
        """
        while self.request.transport is not None and not self.request.transport.is_closing():
            await asyncio.sleep(CLIENT_CHECK_S)
        log.info("[%s] client left mid-chat: cancelling it", self.conn_id)
        talk.cancel()

    # ChatSink
    async def events_through(self, version: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.last_version < version:
            self._progress.clear()
            if not await wait_event(self._progress, deadline - time.monotonic()):
                return self.last_version >= version
        return True

    async def chunk(self, delta: str) -> None:
        await self.send(chat.completion_chunk(self.body["conversation_id"], delta, self.chat.narrator.model))

    async def _forward_events(self) -> None:
        while True:
            await self._forward(*await self.events.queue.get())

    async def _forward(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        await self.send(frame, seq)
        if event["type"] == "world_update":
            self.last_version = max(self.last_version, event["snapshot_version"])
            self._progress.set()

    async def _forward_ready(self) -> None:
        while not self.events.queue.empty():
            await self._forward(*self.events.queue.get_nowait())


async def chat_unified(request: web.Request) -> web.StreamResponse:
    """POST /chat/unified: a chat line becomes an action; its events stream before the narrative."""
    body = await _chat_body(request)  # first: it names the experience the edge checks
    if isinstance(body, web.Response):
        return body
    async with request.app[EDGE].admit(request, "chat", body["experience"]) as admitted:
        if isinstance(admitted, Refusal):
            return admitted.response()
        limits = request.app[CHAT_LIMITS]
        if not (limits.allow(f"user:{admitted.user_id}") and limits.allow(f"address:{request.remote}")):
            return problem(429, ErrorCode.RATE_LIMITED, "too many chat requests; slow down")
        if not body["stream"]:
            return await _chat_once(request, admitted, body)
        chat_stream = ChatStream(request, admitted, body)
        await chat_stream.run()
        return chat_stream.resp or web.Response(status=499)


async def _chat_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's body loaded by its schema, or the 400/422 that says what is wrong with it."""
    try:
        body: dict[str, Any] = _CHAT.load(orjson.loads(await request.read()))
    except orjson.JSONDecodeError as exc:
        return problem(400, ErrorCode.INVALID_JSON, f"body is not valid JSON: {exc}")
    except ValidationError as exc:
        return problem(422, ErrorCode.INVALID_MESSAGE, "body does not match its schema", exc.messages)
    except TypeError:
        return problem(422, ErrorCode.INVALID_MESSAGE, "body must be a JSON object")
    return body


class CollectedChat:
    """`"stream": false`: the narrative gathered into one answer; events go to the persistent stream."""

    def __init__(self) -> None:
        self.text: list[str] = []

    async def events_through(self, version: int, timeout: float) -> bool:
        return True

    async def chunk(self, delta: str) -> None:
        self.text.append(delta)


async def _chat_once(request: web.Request, identity: Identity, body: dict[str, Any]) -> web.Response:
    """`"stream": false`: one JSON answer through the same pipeline, no events."""
    collected = CollectedChat()
    request.app[METRICS].chat_seen("sse", identity.user_id)
    outcome = await request.app[CHAT].run(identity.user_id, body["experience"], body["message"],
                                          body["conversation_id"], f"{request.app[GATEWAY_ID]}-chat-once", collected)
    if outcome.error is not None:
        code, message = outcome.error
        status = {ErrorCode.KB_UNAVAILABLE: 503, ErrorCode.INTERNAL_ERROR: 500}.get(code, 422)
        return problem(status, code, message, outcome.details)
    return web.Response(content_type="application/json", body=orjson.dumps({
        "conversation_id": body["conversation_id"], "model": request.app[CHAT].narrator.model,
        "success": outcome.success, "message": "".join(collected.text), "action": outcome.action,
        "snapshot_version": outcome.snapshot_version, "narrator": outcome.narrator,
        **({"reason": outcome.reason} if outcome.reason else {})}))
