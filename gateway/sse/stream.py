"""GET /sse/experience: a persistent EventSource stream, resumable with Last-Event-ID."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from gateway.delivery.client import StreamClient
from gateway.delivery.gate import SnapshotGate
from gateway.delivery.sendqueue import SendQueue
from gateway.edge.admission import Refusal, parse_cursor
from gateway.keys import EDGE, GATEWAY_ID, KB, METRICS, PRESENCE, REGISTRY, SETTINGS, STREAMS
from gateway.registry import close_label
from shared.schemas.errors import CloseCode, ErrorCode
from shared.schemas.messages import error_frame
from shared.service.problems import problem

log = logging.getLogger(__name__)
Item = tuple[str | None, bytes, str | None]  # (id, data, event type)
EXPIRED = "token_expired"


class SseSession(StreamClient[Item]):
    """One EventSource client: the same stream, cursor and snapshot rules as a WebSocket session."""

    __slots__ = ("expires_at", "request", "settings", "streams", "resp", "overflowed")

    transport = "sse"

    def __init__(self, request: web.Request, user_id: str, experience: str, expires_at: float | None = None) -> None:
        app = request.app
        self.expires_at = expires_at
        self.request = request
        self.settings = app[SETTINGS]
        self.user_id = user_id
        self.experience = experience
        self.conn_id = f"{app[GATEWAY_ID]}-sse-{uuid.uuid4().hex[:10]}"
        self.queue: SendQueue[Item] = SendQueue(self.settings.session_send_queue_size)
        self.streams = app[STREAMS]
        self.stream = self.streams.new(user_id, experience, self.conn_id, self)
        self.gate: SnapshotGate[Item] = SnapshotGate(
            app[KB], experience, user_id, self.conn_id, app[PRESENCE].gateway_id, self.queue.limit,
            emit_event=self._put, emit_frame=lambda frame: self._put((None, orjson.dumps(frame), None)),
            on_overflow=self._overflow)
        self.resp: EventSourceResponse | None = None
        self.overflowed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def _put(self, item: Item) -> None:
        if not self.overflowed and not self.queue.put(item):
            self._overflow()

    def _overflow(self, dropped: list[Item] | None = None) -> bool:
        """Too much waiting: the stream ends; the browser comes back with Last-Event-ID and is replayed, paced."""
        log.warning("[%s] slow SSE consumer: closing the stream", self.conn_id)
        self.overflowed = True
        if self.resp is not None:
            self.resp.stop_streaming()
        return False

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        self.gate.event((str(seq), frame, None), event)

    def on_stalled(self) -> None:
        self._overflow()

    def as_item(self, frame: bytes) -> Item:
        return (None, frame, None)

    async def shutdown(self, code: int, reason: str) -> None:
        if self.resp is not None:
            self.resp.stop_streaming()

    async def run(self, cursor: int | None) -> EventSourceResponse:
        """Stream until the client goes, the server stops, or the client falls too far behind."""
        app = self.request.app
        app[REGISTRY].add(self)
        app[METRICS].user_seen("sse", self.user_id)
        try:
            async with sse_response(self.request, ping_interval=self.settings.sse_keepalive_s) as resp:
                self.resp = resp
                await self.open_at(cursor)
                await resp.write(self._preamble())
                app[PRESENCE].join(self.conn_id, self.user_id, self.experience)
                writer = asyncio.create_task(self._write(resp))
                expiry = self._schedule_expiry()
                await resp.wait()
                if expiry is not None:
                    expiry.cancel()
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        except ConnectionResetError:
            pass
        finally:
            self.cancel_tasks()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.streams.discard(self.stream))
            app[REGISTRY].remove(self, close_label(True, CloseCode.SLOW_CONSUMER) if self.overflowed else None)
            app[PRESENCE].leave(self.conn_id, clean=False)  # EventSource has no clean close: grace applies
            log.info("[%s] SSE stream closed (user=%s)", self.conn_id, self.user_id)
        assert self.resp is not None
        return self.resp

    def _schedule_expiry(self) -> asyncio.TimerHandle | None:
        """When the token expires the stream ends, with a last `token_expired` event that says why
        (EventSource itself only shows a bare error, then stops on the 401 of its reconnect)."""
        if self.expires_at is None:
            return None
        delay = max(0.0, self.expires_at + self.settings.jwt_leeway_s - time.time())
        return asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        frame = orjson.dumps(error_frame(ErrorCode.TOKEN_EXPIRED, "the token expired; reconnect with a new one"))
        if not self.queue.put((None, frame, EXPIRED)) and self.resp is not None:
            self.resp.stop_streaming()  # a full send queue: the stream ends without the last word

    def _preamble(self) -> bytes:
        """`id:` and `retry:` without data: the browser's Last-Event-ID is set before any event, so a
        reconnect after a quiet start still resumes; the reconnect delay is jittered across clients."""
        retry = self.settings.sse_retry_ms
        lines = f"retry: {retry + random.randrange(max(1, retry))}\n"
        if self.stream.cursor is not None:
            lines = f"id: {self.stream.cursor}\n" + lines
        return (lines + "\n").encode()

    async def _write(self, resp: EventSourceResponse) -> None:
        """The only writer: `id: <seq>` on stream events, so Last-Event-ID is the resume cursor."""
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while True:
                items = await self.queue.take()
                for event_id, data, name in items:
                    await resp.send(data.decode(), id=event_id, event=name)
                    if name == EXPIRED:
                        log.info("[%s] token expired: SSE stream closed", self.conn_id)
                        resp.stop_streaming()
                        return
                del items, data  # no sent frame stays referenced while we wait


async def sse_experience(request: web.Request) -> web.StreamResponse:
    """GET /sse/experience?experience=<id>: world_update and presence events with `id: <seq>`."""
    experience = request.query.get("experience", "")
    async with request.app[EDGE].admit(request, "sse", experience) as admitted:
        if isinstance(admitted, Refusal):
            return admitted.response()
        try:
            cursor = parse_cursor(request.headers.get("Last-Event-ID") or request.query.get("last_event_id"))
        except ValueError:
            return problem(400, ErrorCode.INVALID_MESSAGE, "Last-Event-ID must be a non-negative integer")
        return await SseSession(request, admitted.user_id, experience, admitted.expires_at).run(cursor)
