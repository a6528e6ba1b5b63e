"""One WebSocket session: the handler reads, one writer task drains a bounded outbox."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType

from gateway.chat import ChatService
from gateway.gate import SnapshotGate, resumed_frame
from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from gateway.limits import TokenBucket
from gateway.metrics import GatewayMetrics
from gateway.outbox import SessionOutbox
from gateway.presence import PresenceReporter
from gateway.registry import SessionRegistry
from gateway.stream import open_stream
from gateway.streamset import StreamSet
from gateway.websocket import GatewayWebSocket
from gateway.wschat import socket_chat
from shared.config import Settings
from shared.natsconn import NatsLink
from shared.schemas.errors import CloseCode, ErrorCode, ProtocolError
from shared.schemas.messages import error_frame, parse_client_message

log = logging.getLogger(__name__)


def is_event(frame: bytes) -> bool:
    """Stream events (world_update, presence) are the frames that start with their `seq`."""
    return frame.startswith(b'{"seq":')


def event_seq(frame: bytes) -> int:
    """The `seq` an event frame starts with."""
    return int(frame[7:frame.index(b",", 7)])


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SessionDeps:
    """What every session of this gateway shares."""

    settings: Settings
    kb: KbClient
    link: NatsLink
    streams: StreamSet
    registry: SessionRegistry
    presence: PresenceReporter
    metrics: GatewayMetrics
    chat: ChatService


class Session:
    """A player's socket: `connected`, a snapshot, then events and answers until it closes."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = (
        "ws", "expires_at", "_transport", "_closer", "deps", "user_id", "experience", "conn_id", "outbox",
        "stream", "limiter", "server_close", "gate", "_strikes", "_tasks", "_actions", "_writer", "_rewound_at", "budget",
    )

    transport = "websocket"

    def __init__(self, ws: GatewayWebSocket, deps: SessionDeps, user_id: str, experience: str,
                 conn_id: str, transport: asyncio.BaseTransport | None = None,
                 expires_at: float | None = None) -> None:
        self.ws = ws
        self.expires_at = expires_at
        self._transport = transport
        self._closer: asyncio.Task[None] | None = None
        self.deps = deps
        self.user_id = user_id
        self.experience = experience
        self.conn_id = conn_id
        self.outbox: SessionOutbox[bytes] = SessionOutbox(deps.settings.session_outbox_size)
        self.stream = deps.streams.new(user_id, experience, conn_id, self)
        self.limiter = TokenBucket(deps.settings.msg_rate_per_s, deps.settings.msg_burst)
        # get_state and resume each cost a snapshot or a catch-up: their own, smaller budget.
        self.budget = TokenBucket(deps.settings.state_rate_per_s, deps.settings.state_burst)
        self.server_close: int | None = None
        self.gate: SnapshotGate[bytes] = SnapshotGate(
            deps.kb, experience, user_id, conn_id, deps.presence.gateway_id, self.outbox.limit,
            emit_event=self._push, emit_frame=self.send,
            on_overflow=self._held_too_long)
        self._strikes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._actions = 0
        self._writer: asyncio.Task[None] | None = None
        self._rewound_at = -1e9

    # ---- outgoing -------------------------------------------------------------------------
    def send(self, frame: dict[str, Any]) -> None:
        """Encode and queue a frame (never waits)."""
        self._push(orjson.dumps(frame))

    def _push(self, data: bytes) -> None:
        if self.server_close is not None:
            return
        # Nothing queued and no write in progress: hand the frame to the socket now (a task switch
        # per frame would be most of what a session adds to a delivery).
        if self._nothing_waits() and self.ws.try_write(data):
            return
        if self.outbox.put(data) or self._rewind(data):
            if self._writer is None:
                self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.conn_id}")
            return
        log.warning("[%s] slow consumer: outbox full (%d frames) again; closing 4408", self.conn_id, self.outbox.limit)
        self._close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _nothing_waits(self) -> bool:
        """True when a frame written now cannot overtake one queued or being sent."""
        return self.outbox.writer_idle if self._writer is not None else not len(self.outbox)

    def _rewind(self, data: bytes) -> bool:
        """A full outbox: drop the events waiting in it and let the stream read them again, paced by
        the socket (or a snapshot if that is too far). Once per `GAIA_REWIND_EVERY_S`; full again
        within that time (or full of answers, not events) means too slow to keep."""
        now = time.monotonic()
        first = next((f for f in self.outbox.frames if is_event(f)), data if is_event(data) else None)
        if first is None or now - self._rewound_at < self.deps.settings.rewind_every_s:
            return False
        self._rewound_at = now
        dropped = self.outbox.drop(is_event)
        if not is_event(data):
            self.outbox.put(data)
        log.info("[%s] outbox full: %d events dropped, read again from the stream", self.conn_id, dropped)
        self.stream.rewind(event_seq(first) - 1)
        return True

    def _held_too_long(self, dropped: list[bytes]) -> bool:
        """Events piled up behind a snapshot being fetched (a storm while connecting): read them
        again from the stream, paced, rather than close a session that did nothing wrong."""
        if not dropped:
            self._close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        log.info("[%s] %d events held behind a snapshot: read again from the stream", self.conn_id, len(dropped))
        self.stream.rewind(event_seq(dropped[0]) - 1)
        return True

    def on_stalled(self) -> None:
        """Events wait and the client took nothing for `GAIA_SLOW_CONSUMER_S`."""
        log.warning("[%s] slow consumer: nothing taken for %.0fs; closing 4408", self.conn_id,
                    self.deps.settings.slow_consumer_s)
        self._close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        """A stream event: queued, or held while a snapshot is being fetched."""
        self.gate.event(frame, event)

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        """Replay met the live stream (the chain is exact, so no snapshot is needed): say so."""
        self.gate.in_order(resumed_frame(from_seq, to_seq, replayed))

    def on_resync(self, reason: str) -> None:
        """The client's cursor cannot be served (gone, too far behind, stream restarted): a fresh snapshot."""
        self._spawn(self.gate.resync(reason))

    def room(self) -> int:
        """Frames a catch-up may queue now: it fills at most half the outbox, leaving the rest to live traffic."""
        return self.outbox.limit // 2 - len(self.outbox) - self.gate.held

    async def _write_loop(self) -> None:
        """The only writer, started the first time a frame has to wait (the socket was busy).

        Most idle sessions never need one, and hold no task (nor its frame and wake-up future);
        a session that needed one keeps it, so bursts cost no task creation each. The batch is let
        go before waiting again, so no sent frame (a snapshot is about 8 KB) stays referenced.
        """
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while True:
                frames = await self.outbox.take()
                await self.ws.send_texts(frames)
                del frames

    # ---- lifecycle ------------------------------------------------------------------------
    async def run(self, last_seq: int | None) -> None:
        """Serve the socket until it closes; cleanup survives cancellation."""
        deps = self.deps
        deps.registry.add(self)
        deps.metrics.user_seen("websocket", self.user_id)
        expiry = self._schedule_expiry()
        clean = False
        try:
            self.send({"type": "connected", "connection_id": self.conn_id, "user_id": self.user_id,
                       "experience": self.experience, "timestamp": now_ms()})
            await self._start_stream(last_seq)
            if self.server_close is None:
                deps.presence.join(self.conn_id, self.user_id, self.experience)
            clean = await self._read_loop()
        finally:
            if expiry is not None:
                expiry.cancel()
            await asyncio.shield(self._cleanup(clean))

    def _schedule_expiry(self) -> asyncio.TimerHandle | None:
        """A token that expires mid-session ends it with 4401 (the client reconnects with a new one)."""
        if self.expires_at is None:
            return None
        delay = self.expires_at + self.deps.settings.jwt_leeway_s - time.time()
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, delay), lambda: self._close_soon(CloseCode.UNAUTHORIZED, "token expired",
                                                                           flush=True))

    async def _start_stream(self, last_seq: int | None) -> None:
        """Fresh: subscribe, then snapshot. Resume: replay from the cursor, or resync if it is gone."""
        if last_seq is not None:
            await self._resume(last_seq)
            return
        self.gate.hold()
        try:
            await open_stream(self.stream, None)
        finally:
            self.gate.release()
        try:
            await self.gate.send_view()
        except KbRejected as exc:
            if exc.body.get("error") != "too_many_sessions":
                raise
            self.refuse(str(exc))

    def refuse(self, reason: str) -> None:
        """kb counts this user's sessions over every gateway process: one too many closes 4409."""
        log.info("[%s] refused by kb: %s; closing 4409", self.conn_id, reason)
        self._close_soon(CloseCode.TOO_MANY_SESSIONS, reason, flush=True)

    async def _read_loop(self) -> bool:
        """The only reader. Returns True if the client closed cleanly (1000)."""
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.send(error_frame(ErrorCode.INVALID_MESSAGE, "binary frames are not supported; send JSON text"))
            elif msg.type == WSMsgType.ERROR:
                log.info("[%s] socket error: %s", self.conn_id, self.ws.exception())
                break
        return self.server_close is None and self.ws.close_code == CloseCode.NORMAL

    def _on_text(self, data: str) -> None:
        if not self.limiter.allow():
            self._strikes += 1
            if self._strikes > self.deps.settings.msg_burst:
                self._close_soon(CloseCode.TOO_MANY_MESSAGES, "too many messages", flush=True)
            else:
                self.send(error_frame(ErrorCode.RATE_LIMITED, "too many messages; slow down"))
            return
        self._strikes = 0
        try:
            message = parse_client_message(data)
        except ProtocolError as exc:
            self.send(error_frame(exc.code, exc.message, exc.msg_id, exc.details))
            return
        self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            self.send({"type": "pong", "timestamp": message.get("timestamp")})
        elif kind in ("get_state", "resume") and not self.budget.allow():
            self.send(error_frame(ErrorCode.RATE_LIMITED, f"{kind} at most {self.deps.settings.state_rate_per_s:g}/s; "
                                                          "slow down"))
        elif kind == "get_state":
            self._spawn(self.gate.send_view())
        elif kind == "resume":
            self._spawn(self._resume(message["last_seq"]))
        elif kind in ("action", "chat"):
            if self._actions >= self.deps.settings.session_max_actions:
                self.send(error_frame(ErrorCode.RATE_LIMITED, f"too many {kind}s in flight", message["id"]))
                return
            self._actions += 1
            self._spawn(self._act(message) if kind == "action" else self._chat(message))

    async def _act(self, message: dict[str, Any]) -> None:
        """Send one action to kb and answer with action_response (or an error with the same id)."""
        msg_id = message["id"]
        args = {k: v for k, v in message.items() if k not in ("type", "id")}
        started = time.perf_counter()
        try:
            trace = f"{self.conn_id}:{msg_id}"[:128]  # ids may be 128 characters themselves; kb takes 128
            result = await self.deps.kb.act(self.experience, self.user_id, args, trace)
            self.deps.metrics.action_seconds.labels(self.transport).observe(time.perf_counter() - started)
            self.send({"type": "action_response", "id": msg_id, "action": message["action"],
                       "success": result["success"], "message": result["message"],
                       "snapshot_version": result.get("snapshot_version")})
        except KbUnavailable as exc:
            log.warning("[%s] action %s: %s", self.conn_id, message["action"], exc)
            self.send(error_frame(ErrorCode.KB_UNAVAILABLE, "the world service is unavailable; try again", msg_id))
        except KbRejected as exc:
            self.send(error_frame(exc.body.get("error", ErrorCode.INVALID_MESSAGE), str(exc), msg_id,
                                  exc.body.get("details")))
        finally:
            self._actions -= 1

    async def _chat(self, message: dict[str, Any]) -> None:
        try:
            await socket_chat(self, message)
        finally:
            self._actions -= 1

    async def _resume(self, last_seq: int) -> None:
        """Restart the stream from the client's cursor (on connect, or a `resume` message).

        An in-socket resume replaces the stream: the old one is closed first, so nothing it still
        receives can move the new one's cursor.
        """
        if self.stream.cursor is not None or self.stream.catching_up:
            old = self.stream
            self.stream = self.deps.streams.new(self.user_id, self.experience, self.conn_id, self)
            await self.deps.streams.discard(old)
        self.gate.hold()
        try:
            await open_stream(self.stream, last_seq)
        finally:
            self.gate.release()

    def _spawn(self, coro: Any) -> None:
        """Run a request concurrently so a slow kb never blocks pings or events.

        The coroutine is the task itself (no wrapper): cancelled before it starts, at shutdown, it
        is closed properly instead of warning that it was never awaited.
        """
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("[%s] unexpected error", self.conn_id, exc_info=task.exception())
        self.send(error_frame(ErrorCode.INTERNAL_ERROR, "unexpected server error"))

    def _close_soon(self, code: int, reason: str, flush: bool = False) -> None:
        """Close from outside the reader; with flush, frames already queued (the errors) go first.

        A slow consumer is closed without flushing: its outbox is what it cannot take.
        """
        if self.server_close is not None:
            return
        self.server_close = code
        if not flush and self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close_ws(code, reason, flush))

    async def _close_ws(self, code: int, reason: str, flush: bool = False) -> None:
        """Send the close frame if the socket will take it; otherwise drop the connection."""
        closed = False
        deadline = time.monotonic() + 1.0
        while flush and len(self.outbox) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), timeout=2.0)
            closed = True
        except Exception as exc:  # noqa: BLE001 - whatever stopped the close, the connection must go
            log.info("[%s] close %d did not complete (%s)", self.conn_id, code, type(exc).__name__)
        finally:
            # A client that reads nothing never takes our close frame: abort so the reader ends.
            if not closed and self._transport is not None:
                self._transport.abort()

    async def shutdown(self, code: int, reason: str) -> None:
        """Server-initiated close (shutdown: 1001)."""
        self.server_close = code
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), timeout=2.0)

    async def _cleanup(self, clean: bool) -> None:
        """Unsubscribe, deregister, report presence, close the socket: always, exactly once."""
        deps = self.deps
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await deps.streams.discard(self.stream)
        deps.registry.remove(self, self.server_close or self.ws.close_code)
        deps.presence.leave(self.conn_id, clean)
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=2.0)
        log.info("[%s] closed (user=%s clean=%s code=%s)", self.conn_id, self.user_id, clean,
                 self.server_close or self.ws.close_code)
