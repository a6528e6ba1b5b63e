"""The gateway's WebSocket: our close codes, and frames handed to the transport without a task switch.

The direct writes use aiohttp internals (the response's `_writer`, its transport and compression
setting, the protocol's `_drain_helper`), so aiohttp is pinned to one minor version in setup.cfg
and `check_aiohttp_internals` fails the start with a clear message if an upgrade moved them.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import struct

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketWriter

from shared.schemas.errors import CloseCode


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket, closing oversized frames with 4413 (our protocol) instead of 1009, and
    handing several waiting frames to the socket in one write."""

    async def send_texts(self, frames: list[bytes]) -> None:
        """Send text frames in order; without per-message compression, as one write to the transport.

        One write instead of one per frame: a session that fell behind for a moment catches up with
        a single system call. With compression negotiated (browsers) each frame goes on its own.
        """
        writer = self._writer
        if len(frames) == 1 or writer is None or writer.compress:
            for frame in frames:
                await self.send_frame(frame, WSMsgType.TEXT)
            return
        data = b"".join(framed(frames))
        if self.closed or writer.transport.is_closing():
            raise ConnectionResetError("the socket is closing")
        writer.transport.write(data)
        if writer.protocol.writing_paused:  # aiohttp's own flow control: wait until the socket drains
            await writer.protocol._drain_helper()

    def try_write(self, frame: bytes) -> bool:
        """Write one text frame now if the socket takes it at once (no compression, not paused).

        The session calls this only while its writer is idle with nothing queued, so order holds;
        False means: queue it for the writer.
        """
        transport = self._ready_transport()
        if transport is None:
            return False
        transport.write(text_frame_header(len(frame)) + frame)
        return True

    def try_write_all(self, frames: list[bytes]) -> bool:
        """Write text frames now, in order, as one write, if the socket takes them at once (as `try_write`)."""
        transport = self._ready_transport()
        if transport is None:
            return False
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
    missing += [f"WebSocketResponse.{name}" for name in ("_writer", "_closed")
                if name not in getattr(web.WebSocketResponse, "__annotations__", {})]
    if not inspect.iscoroutinefunction(getattr(BaseProtocol, "_drain_helper", None)):
        missing.append("BaseProtocol._drain_helper()")
    if not isinstance(getattr(BaseProtocol, "writing_paused", None), property):
        missing.append("BaseProtocol.writing_paused")
    params = inspect.signature(WebSocketWriter.__init__).parameters
    missing += [f"WebSocketWriter.{name}" for name in ("protocol", "transport", "compress") if name not in params]
    if missing:
        raise AiohttpInternalsMoved(
            "gateway/ws/socket.py writes frames through aiohttp internals that this aiohttp lacks: "
            + ", ".join(missing) + f"; install aiohttp {PINNED_AIOHTTP}x (setup.cfg pins it) or port the direct writes")
