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

from gateway.gate import SnapshotGate, resumed_frame
from gateway.keys import GATEWAY_ID, KB, METRICS, PRESENCE, REGISTRY, SETTINGS, STREAMS
from gateway.outbox import SessionOutbox
from gateway.sse import authenticate, check_experience, json_error, sse_count
from gateway.stream import open_stream
from gateway.ws import open_from, parse_cursor, refuse_crowded_address
from shared.schemas.errors import CloseCode, ErrorCode
from shared.schemas.messages import error_frame

log = logging.getLogger(__name__)
Item = tuple[str | None, bytes, str | None]  # (id, data, event type)
EXPIRED = "token_expired"


class SseSession:
    """One EventSource client: the same stream, cursor and snapshot rules as a WebSocket session."""

    transport = "sse"

    def __init__(self, request: web.Request, user_id: str, experience: str, expires_at: float | None = None) -> None:
        app = request.app
        self.expires_at = expires_at
        self.request = request
        self.settings = app[SETTINGS]
        self.user_id = user_id
        self.experience = experience
        self.conn_id = f"{app[GATEWAY_ID]}-sse-{uuid.uuid4().hex[:10]}"
        self.outbox: SessionOutbox[Item] = SessionOutbox(self.settings.session_outbox_size)
        self.streams = app[STREAMS]
        self.stream = self.streams.new(user_id, experience, self.conn_id, self)
        self.gate: SnapshotGate[Item] = SnapshotGate(
            app[KB], experience, user_id, self.conn_id, app[GATEWAY_ID], self.outbox.limit, emit_event=self._put,
            emit_frame=lambda frame: self._put((None, orjson.dumps(frame), None)), on_overflow=self._overflow)
        self.resp: EventSourceResponse | None = None
        self.overflowed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def _put(self, item: Item) -> None:
        if not self.overflowed and not self.outbox.put(item):
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

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        self.gate.in_order((None, resumed_frame(from_seq, to_seq, replayed), None))

    def on_resync(self, reason: str) -> None:
        self._spawn(self.gate.resync(reason))

    def room(self) -> int:
        return self.outbox.limit // 2 - len(self.outbox) - self.gate.held

    def on_stalled(self) -> None:
        self._overflow()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """A snapshot or resync that failed unexpectedly is logged, and the stream goes on."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] unexpected error", self.conn_id, exc_info=task.exception())

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
                await self._open(cursor)
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
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.streams.discard(self.stream))
            app[REGISTRY].remove(self, CloseCode.SLOW_CONSUMER if self.overflowed else None)
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
        if not self.outbox.put((None, frame, EXPIRED)) and self.resp is not None:
            self.resp.stop_streaming()  # a full outbox: the stream ends without the last word

    def _preamble(self) -> bytes:
        """`id:` and `retry:` without data: the browser's Last-Event-ID is set before any event, so a
        reconnect after a quiet start still resumes; the reconnect delay is jittered across clients."""
        retry = self.settings.sse_retry_ms
        lines = f"retry: {retry + random.randrange(max(1, retry))}\n"
        if self.stream.cursor is not None:
            lines = f"id: {self.stream.cursor}\n" + lines
        return (lines + "\n").encode()

    async def _open(self, cursor: int | None) -> None:
        self.gate.hold()
        try:
            await open_stream(self.stream, cursor)
        finally:
            self.gate.release()

    async def _write(self, resp: EventSourceResponse) -> None:
        """The only writer: `id: <seq>` on stream events, so Last-Event-ID is the resume cursor."""
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while True:
                items = await self.outbox.take()
                for event_id, data, name in items:
                    await resp.send(data.decode(), id=event_id, event=name)
                    if name == EXPIRED:
                        log.info("[%s] token expired: SSE stream closed", self.conn_id)
                        resp.stop_streaming()
                        return
                del items, data  # no sent frame stays referenced while we wait


async def sse_experience(request: web.Request) -> web.StreamResponse:
    """GET /sse/experience?experience=<id>: world_update and presence events with `id: <seq>`."""
    identity = await authenticate(request, allow_query=True)
    if isinstance(identity, web.Response):
        return identity
    experience = request.query.get("experience", "")
    if not experience:
        return json_error(400, "invalid_message", "the experience query parameter is required")
    refused = await check_experience(request, experience)
    if refused is not None:
        return refused
    if sse_count(request, identity.user_id) >= request.app[SETTINGS].max_sse_per_user:
        return json_error(429, "too_many_streams", "too many SSE streams for this user")
    refuse_crowded_address(request)
    try:
        cursor = parse_cursor(request.headers.get("Last-Event-ID") or request.query.get("last_event_id"))
    except ValueError:
        return json_error(400, "invalid_message", "Last-Event-ID must be a non-negative integer")
    with open_from(request):
        return await SseSession(request, identity.user_id, experience, identity.expires_at).run(cursor)
