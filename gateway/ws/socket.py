"""The gateway's WebSocket: our close codes, frames handed to the transport without a task switch,
every frame the client sends charged before aiohttp parses it, and an abusive client closed unread.

The direct writes use aiohttp internals (the response's `_writer`, its transport and compression
setting, the protocol's `_drain_helper`), and so do the frame guard (gateway/ws/frameguard.py, put
in front of aiohttp's reader as the request handler's `_payload_parser`, with its `_message_tail`,
by the response's `_post_start`, whose `_parser` it wraps) and the close and heartbeat here (the
response's `_reader`, `_closed`, `_close_code`, `_exception`, `_set_closed`), so aiohttp is pinned to
one minor version in setup.cfg and `check_aiohttp_internals` fails the start with a clear message if
an upgrade moved them.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import struct
from typing import Any, Callable

import aiohttp
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_protocol import RequestHandler

from gateway.ws.frameguard import FrameGuard, FrameLimits
from gateway.ws.heartbeat import Heartbeat
from shared.schemas.errors import CloseCode

CUT_OFF_S = 1.0  # a peer that has not taken our close frame by then is cut off (it is not read meanwhile)
PING_OPCODE, PONG_OPCODE, CLOSE_OPCODE = 0x89, 0x8A, 0x88  # FIN + opcode
CLOSED = WSMessage(WSMsgType.CLOSED, None, None)


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket, closing oversized frames with 4413 (our protocol) instead of 1009, handing
    several waiting frames to the socket in one write, and (given `limits`) guarding what the client
    sends: every frame charged first, pings answered within the budget, an abuser closed unread."""

    def __init__(self, *, limits: FrameLimits | None = None, heartbeat: float | None = None, **kwargs: Any) -> None:
        # With limits, pings are answered here (`answer_ping`: at most one pong waits for a socket that is
        # not reading, where aiohttp's autoping writes one per ping), and the heartbeat is ours
        # (gateway/ws/heartbeat.py: an unsolicited pong is no sign of life, where any byte is aiohttp's).
        super().__init__(autoping=limits is None, heartbeat=None if limits else heartbeat, **kwargs)
        self.limits = limits
        self.heartbeat_s = heartbeat if limits else None
        self.heartbeat: Heartbeat | None = None
        self.guard: FrameGuard | None = None
        self.on_abuse: Callable[[int, str], None] | None = None  # the session's; default: close_unread
        self._pending_pong: bytes | None = None
        self._cut_off: asyncio.TimerHandle | None = None  # after close_unread, the connection ends then

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        """aiohttp's start, then the guard put in front of its reader (every byte from now on, and any that
        came with the handshake, passes the guard first), and our heartbeat."""
        if self.limits is None:  # unguarded (the bench's forwarder floor): aiohttp's own
            super()._post_start(request, protocol, writer)
            return
        handler = request.protocol
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        assert self._parser is not None
        self.guard = FrameGuard(self._parser, self.limits, self._abused)
        handler._payload_parser = self.guard
        if self.heartbeat_s:
            self.heartbeat = Heartbeat(self.heartbeat_s, self._ping, self._lost)
        if tail:  # the 101 is already on the wire (headers are sent at once), so a close may follow it
            self.guard.feed_data(tail)

    def received(self, msg: WSMessage) -> None:
        """What the session read: a finished message, or the pong to our ping, shows the client is there."""
        heartbeat = self.heartbeat
        if heartbeat is not None:
            if msg.type == WSMsgType.PONG:
                heartbeat.pong(msg.data)
            else:
                heartbeat.alive()

    def _ping(self, payload: bytes) -> None:
        writer = self._writer
        if writer is not None and not self._closed and not writer.transport.is_closing():
            writer.transport.write(struct.pack("!BB", PING_OPCODE, len(payload)) + payload)

    def _lost(self) -> None:
        """Our ping went unanswered: the connection goes (1006, as aiohttp's heartbeat does it)."""
        if self._closed:
            return
        self._set_closed()
        self._close_code = WSCloseCode.ABNORMAL_CLOSURE
        self._exception = asyncio.TimeoutError(f"no pong within {(self.heartbeat_s or 0) / 2:g} s")
        if self._writer is not None:
            self._writer.transport.close()
        if self._reader is not None:  # the session ends as for aiohttp's heartbeat: an error, not a clean close
            self._reader.feed_data(WSMessage(WSMsgType.ERROR, self._exception, None), 0)

    def _set_closed(self) -> None:
        super()._set_closed()
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def _abused(self, code: int, reason: str) -> None:
        handler = self.on_abuse
        if handler is None:
            self.close_unread(code, reason)
        else:
            handler(code, reason)

    def close_unread(self, code: int, reason: str) -> None:
        """Close without reading any further (a client that broke its budget, or every client when the
        gateway stops): reading stops, the close frame follows what is already written, then our end of
        the stream (FIN); the connection is cut off CUT_OFF_S later. Nothing here waits.

        aiohttp's own close waits for the peer's close frame, reading (and parsing) everything the
        peer had sent first: megabytes of a flood. Closing at once instead would reset the
        connection (unread bytes wait in the kernel), and a reset can take the close frame with it
        before the client reads it: the short wait lets a client that reads learn why.
        """
        writer = self._writer
        if writer is None:
            return
        if self.guard is not None:
            self.guard.stopped = True
        was_closed = self._closed
        self._set_closed()  # the heartbeat stops; aiohttp's close() and receive() end at once from now on
        if self._close_code is None:
            self._close_code = code
        transport = writer.transport
        if not transport.is_closing() and self._cut_off is None:
            transport.pause_reading()
            if not was_closed:
                transport.write(close_frame(code, reason))
            if transport.can_write_eof():
                transport.write_eof()  # FIN once the buffer is written
            self._cut_off = asyncio.get_running_loop().call_later(CUT_OFF_S, _cut_off, transport)
        if self._reader is not None:  # the session's read loop ends now, not after what is queued
            self._reader.feed_data(CLOSED, 0)  # (an end of stream would make the close code 1000)

    async def until_cut_off(self) -> None:
        """After `close_unread`: wait for the cut-off (the request handler closes the transport when we
        return, which would reset the connection at once)."""
        handle = self._cut_off
        if handle is not None and not handle.cancelled():
            await asyncio.sleep(max(0.0, handle.when() - asyncio.get_running_loop().time()))

    def answer_ping(self, payload: bytes) -> None:
        """A client's ping (already charged to its budget): pong now if the socket takes it at once,
        else keep only the newest (RFC 6455 5.5.3 allows answering just that one) for the next write."""
        self._pending_pong = payload
        self.flush_pong()

    def flush_pong(self) -> None:
        """Write the pong that waits, if any, while the socket takes writes at once."""
        payload = self._pending_pong
        if payload is None:
            return
        writer = self._writer
        if writer is None or self._closed or writer.protocol.writing_paused or writer.transport.is_closing():
            return
        self._pending_pong = None
        writer.transport.write(struct.pack("!BB", PONG_OPCODE, len(payload)) + payload)

    async def send_texts(self, frames: list[bytes]) -> None:
        """Send text frames in order; without per-message compression, as one write to the transport.

        One write instead of one per frame: a session that fell behind for a moment catches up with
        a single system call. With compression negotiated (browsers) each frame goes on its own.
        """
        writer = self._writer
        if len(frames) == 1 or writer is None or writer.compress:
            for frame in frames:
                await self.send_frame(frame, WSMsgType.TEXT)
        else:
            data = b"".join(framed(frames))
            if self.closed or writer.transport.is_closing():
                raise ConnectionResetError("the socket is closing")
            writer.transport.write(data)
            if writer.protocol.writing_paused:  # aiohttp's own flow control: wait until the socket drains
                await writer.protocol._drain_helper()
        if self._pending_pong is not None:  # the socket took what we had: the pong that waited goes too
            self.flush_pong()

    def try_write(self, frame: bytes) -> bool:
        """Write one text frame now if the socket takes it at once (no compression, not paused).

        The session calls this only while its writer is idle with nothing queued, so order holds;
        False means: queue it for the writer.
        """
        transport = self._ready_transport()
        if transport is None:
            return False
        if self._pending_pong is not None:
            self.flush_pong()
        transport.write(text_frame_header(len(frame)) + frame)
        return True

    def try_write_all(self, frames: list[bytes]) -> bool:
        """Write text frames now, in order, as one write, if the socket takes them at once (as `try_write`)."""
        transport = self._ready_transport()
        if transport is None:
            return False
        if self._pending_pong is not None:
            self.flush_pong()
        transport.write(b"".join(framed(frames)))
        return True

    def _ready_transport(self) -> asyncio.Transport | None:
        """The transport, if a frame handed to it now goes out as it is: uncompressed, open, not paused."""
        writer = self._writer
        if writer is None or writer.compress or self._closed or writer.protocol.writing_paused:
            return None
        transport = writer.transport
        return None if transport.is_closing() else transport

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            code, message = CloseCode.FRAME_TOO_LARGE, b"frame too large"
        return await super().close(code=code, message=message, drain=drain)


def _cut_off(transport: asyncio.Transport) -> None:
    """The close frame was not taken in time: drop the connection (nothing if it is gone already)."""
    with contextlib.suppress(RuntimeError):  # a loop already closed at shutdown
        transport.abort()


def close_frame(code: int, reason: str) -> bytes:
    """RFC 6455 close frame from the server (unmasked), the reason cut to fit a control frame."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", CLOSE_OPCODE, len(payload)) + payload


def framed(frames: list[bytes]) -> list[bytes]:
    """Each frame after its header, ready for one join (one copy of the bytes, not two)."""
    parts: list[bytes] = []
    for frame in frames:
        parts += (text_frame_header(len(frame)), frame)
    return parts


@functools.lru_cache(maxsize=4096)  # a broadcast's copies mostly share a length: one pack per length, not per copy
def text_frame_header(length: int) -> bytes:
    """RFC 6455 header of a final, unmasked text frame (server to client)."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


PINNED_AIOHTTP = "3.14."


class AiohttpInternalsMoved(RuntimeError):
    """The aiohttp installed does not have the internals the direct writes use."""


def check_aiohttp_internals() -> None:
    """Fail fast, naming what moved, when aiohttp lacks what `GatewayWebSocket` writes through."""
    missing = []
    if not aiohttp.__version__.startswith(PINNED_AIOHTTP):
        missing.append(f"version {PINNED_AIOHTTP}x (found {aiohttp.__version__})")
    missing += [f"WebSocketResponse.{name}" for name in ("_writer", "_closed", "_reader", "_parser", "_close_code",
                                                         "_exception")
                if name not in getattr(web.WebSocketResponse, "__annotations__", {})]
    missing += [f"WebSocketResponse.{name}()" for name in ("_post_start", "_set_closed")
                if not callable(getattr(web.WebSocketResponse, name, None))]
    post_start = getattr(web.WebSocketResponse, "_post_start", None)
    if callable(post_start) and list(inspect.signature(post_start).parameters) != ["self", "request", "protocol",
                                                                                   "writer"]:
        missing.append("WebSocketResponse._post_start(request, protocol, writer)")
    if not getattr(web.WebSocketResponse, "_send_headers_immediately", False):
        missing.append("WebSocketResponse._send_headers_immediately (the 101 on the wire before _post_start)")
    # gateway/edge/pending.py: the server's connection hooks, and requests made with their protocol third
    for name, expected in (("connection_made", ["self", "handler", "transport"]),
                           ("connection_lost", ["self", "handler", "exc"]),
                           ("_make_request", ["self", "message", "payload", "protocol", "writer", "task"])):
        method = getattr(web.Server, name, None)
        if not callable(method) or list(inspect.signature(method).parameters)[:len(expected)] != expected:
            missing.append(f"Server.{name}({', '.join(expected[1:])})")
    missing += [f"RequestHandler.{name}" for name in ("_payload_parser", "_message_tail")
                if name not in getattr(RequestHandler, "__slots__", ())]
    if not inspect.iscoroutinefunction(getattr(BaseProtocol, "_drain_helper", None)):
        missing.append("BaseProtocol._drain_helper()")
    if not isinstance(getattr(BaseProtocol, "writing_paused", None), property):
        missing.append("BaseProtocol.writing_paused")
    params = inspect.signature(WebSocketWriter.__init__).parameters
    missing += [f"WebSocketWriter.{name}" for name in ("protocol", "transport", "compress") if name not in params]
    if missing:
        raise AiohttpInternalsMoved(
            "gateway/ws/socket.py writes frames and guards the reader through aiohttp internals that this "
            "aiohttp lacks: "
            + ", ".join(missing) + f"; install aiohttp {PINNED_AIOHTTP}x (setup.cfg pins it) or port the direct writes")
