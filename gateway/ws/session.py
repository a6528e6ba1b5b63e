"""One WebSocket session, its reading half: `connected`, a snapshot, then requests in and events out.

The handler's task is the only reader; the `SocketWriter` (ws/writer.py) is the only writer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType

from gateway.connlog import LINES
from gateway.delivery.client import StreamClient
from gateway.delivery.gate import SnapshotGate
from gateway.edge.buckets import TokenBucket
from gateway.kbclient import KbRejected, KbUnavailable
from gateway.registry import close_label
from gateway.sessiondeps import SessionDeps
from gateway.streams.frameformat import event_seq
from gateway.ws.chat import socket_chat
from gateway.ws.socket import GatewayWebSocket
from gateway.ws.writer import SocketWriter
from shared.schemas.errors import CloseCode, ErrorCode, ProtocolError
from shared.schemas.messages import error_frame, parse_client_message

log = logging.getLogger(__name__)
ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def now_ms() -> int:
    """Wall-clock milliseconds, as frames carry them."""
    return int(time.time() * 1000)


class Session(StreamClient[bytes]):
    """A player's socket: `connected`, a snapshot, then events and answers until it closes."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("ws", "expires_at", "deps", "writer", "limiter", "budget", "_strikes", "_actions", "_ended")

    transport = "websocket"

    def __init__(self, ws: GatewayWebSocket, deps: SessionDeps, user_id: str, experience: str,
                 conn_id: str, transport: asyncio.Transport | None = None,
                 expires_at: float | None = None) -> None:
        settings = deps.settings
        self.ws = ws
        self.expires_at = expires_at
        self.deps = deps
        self.user_id = user_id
        self.experience = experience
        self.conn_id = conn_id
        self.writer = SocketWriter(ws, transport, conn_id, settings.session_send_queue_size, settings.rewind_every_s,
                                   self._rewind_stream, deps.timings,
                                   deps.ticks.for_experience(experience), settings.session_send_queue_bytes)
        self.queue = self.writer.queue
        self.stream = deps.streams.new(user_id, experience, conn_id, self)
        self.limiter = TokenBucket(settings.msg_rate_per_s, settings.msg_burst)
        # get_state and resume each cost a snapshot or a catch-up: their own, smaller budget.
        self.budget = TokenBucket(settings.state_rate_per_s, settings.state_burst)
        self.gate: SnapshotGate[bytes] = SnapshotGate(
            deps.kb, experience, user_id, conn_id, deps.presence.gateway_id, self.queue.limit,
            emit_event=self.writer.push, emit_frame=self.writer.send, on_overflow=self._held_too_long)
        self._strikes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._actions = 0
        ws.on_abuse = self._abused  # the frame guard's breaches close through the writer
        self._ended: WSMsgType | None = None  # what ended the read loop (a close frame, an error, the end)

    @property
    def server_close(self) -> int | None:
        """Our close code, once the server decided to close this session."""
        return self.writer.server_close

    def send(self, frame: dict[str, Any]) -> None:
        """Encode and queue a frame (never waits)."""
        self.writer.send(frame)

    def as_item(self, frame: bytes) -> bytes:
        return frame

    # ---- what the stream tells us ---------------------------------------------------------
    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        """A stream event: queued, or held while a snapshot is being fetched."""
        self.gate.event(frame, event)

    def on_stalled(self) -> None:
        """Events wait and the client took nothing for `GAIA_SLOW_CONSUMER_S`."""
        log.warning("[%s] slow consumer: nothing taken for %.0fs; closing 4408", self.conn_id,
                    self.deps.settings.slow_consumer_s)
        self.writer.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _rewind_stream(self, cursor: int) -> None:
        """The writer dropped queued events after `cursor`: the current stream reads them again."""
        self.stream.rewind(cursor)

    def _held_too_long(self, dropped: list[bytes]) -> bool:
        """Events piled up behind a snapshot being fetched (a storm while connecting): read them
        again from the stream, paced, rather than close a session that did nothing wrong."""
        if not dropped:
            self.writer.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        log.info("[%s] %d events held behind a snapshot: read again from the stream", self.conn_id, len(dropped))
        first = event_seq(dropped[0])
        assert first is not None  # the gate drops only stream events
        self.stream.rewind(first - 1)
        return True

    def after_failure(self) -> None:
        """An unexpected failure of a request (logged): the client hears `internal_error`."""
        self.send(error_frame(ErrorCode.INTERNAL_ERROR, "unexpected server error"))

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
        return asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: self.writer.close_soon(CloseCode.UNAUTHORIZED, "token expired", flush=True))

    async def _start_stream(self, last_seq: int | None) -> None:
        """Fresh: subscribe, then snapshot. Resume: replay from the cursor, or resync if it is gone."""
        if last_seq is not None:
            await self._resume(last_seq)
            return
        try:
            await self.open_with_snapshot()
        except KbRejected as exc:
            if exc.body.get("error") != ErrorCode.TOO_MANY_SESSIONS:
                raise
            self.refuse(str(exc))

    async def _read_loop(self) -> bool:
        """The only reader. Returns True if the client closed cleanly (1000)."""
        while True:
            msg = await self.ws.receive()
            self.ws.received(msg)
            if msg.type == WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type == WSMsgType.PING:  # charged by the frame guard already
                self.ws.answer_ping(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.send(error_frame(ErrorCode.INVALID_MESSAGE, "binary frames are not supported; send JSON text"))
            elif msg.type in ENDS:
                self._ended = msg.type
                if msg.type == WSMsgType.ERROR:
                    log.info("[%s] socket error: %s", self.conn_id, self.ws.exception())
                break
        return self.server_close is None and self.ws.close_code == CloseCode.NORMAL

    def _close_label(self) -> tuple[str, str]:
        """Who closed, and with which code, for the closes' metric (gateway/registry.py)."""
        code = self.ws.close_code
        if self.server_close is not None:
            return close_label(True, self.server_close)
        if self._ended == WSMsgType.CLOSE:  # the client's own close frame
            return close_label(False, code)
        if self._ended == WSMsgType.ERROR and code not in (None, WSCloseCode.ABNORMAL_CLOSURE):
            # aiohttp's reader refused a frame (our 4413 on the wire for its 1009)
            return close_label(True, CloseCode.FRAME_TOO_LARGE if code == WSCloseCode.MESSAGE_TOO_BIG else code)
        return close_label(False, WSCloseCode.ABNORMAL_CLOSURE)  # gone without a close frame, or silent

    def _abused(self, code: int, reason: str) -> None:
        """The client broke a budget (frames, bytes, messages, a message that never ends, an unmasked
        frame): one line, and the socket is closed without reading any further."""
        if self.server_close is None:
            log.info("[%s] %s; closing %d", self.conn_id, reason, code)
        self.writer.close_unread(code, reason)

    def _on_text(self, data: str) -> None:
        if not self.limiter.allow():
            self._strikes += 1
            if self._strikes > self.deps.settings.msg_burst:
                self._abused(CloseCode.TOO_MANY_MESSAGES, "too many messages")
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
            self.spawn(self.gate.send_view())
        elif kind == "resume":
            self.spawn(self._resume(message["last_seq"]))
        elif kind in ("action", "chat"):
            if self._actions >= self.deps.settings.session_max_actions:
                self.send(error_frame(ErrorCode.RATE_LIMITED, f"too many {kind}s in flight", message["id"]))
                return
            self._actions += 1
            self.spawn(self._act(message) if kind == "action" else self._chat(message))

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
            await socket_chat(message, self.gate, self.deps.chat, self.deps.metrics, self.user_id, self.experience,
                              self.conn_id)
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
        await self.open_at(last_seq)

    def refuse(self, reason: str) -> None:
        """kb counts this user's sessions over every gateway process: one too many closes 4409."""
        log.info("[%s] refused by kb: %s; closing 4409", self.conn_id, reason)
        self.writer.close_soon(CloseCode.TOO_MANY_SESSIONS, reason, flush=True)

    async def shutdown(self, code: int, reason: str) -> None:
        """The gateway stops (1001): closed unread, written at once, no wait for the client's close frame;
        the read loop ends now. The client resumes with `last_seq` elsewhere, so what is still queued may
        go unsent."""
        self.writer.close_unread(code, reason)

    async def _cleanup(self, clean: bool) -> None:
        """Unsubscribe, deregister, report presence, close the socket: always, exactly once."""
        deps = self.deps
        self.ws.on_abuse = None  # no cycle left between the socket and this session
        self.cancel_tasks()
        with contextlib.suppress(Exception):
            await deps.streams.discard(self.stream)
        deps.registry.remove(self, self._close_label())
        deps.presence.leave(self.conn_id, clean)
        await self.writer.finish()
        LINES.line("closed", "[%s] closed (user=%s clean=%s code=%s)", self.conn_id, self.user_id, clean,
                   self.server_close or self.ws.close_code)
