"""The gateway's WebSocket: our close codes, and several waiting frames handed over in one write."""
from __future__ import annotations

import struct

from aiohttp import WSCloseCode, WSMsgType, web

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
        data = b"".join(text_frame_header(len(frame)) + frame for frame in frames)
        if self.closed or writer.transport.is_closing():
            raise ConnectionResetError("the socket is closing")
        writer.transport.write(data)
        if writer.protocol._paused:  # aiohttp's own flow control: wait until the socket drains
            await writer.protocol._drain_helper()

    def try_write(self, frame: bytes) -> bool:
        """Write one text frame now if the socket takes it at once (no compression, not paused).

        The session calls this only while its writer is idle with nothing queued, so order holds;
        False means: queue it for the writer.
        """
        writer = self._writer
        if (writer is None or writer.compress or self.closed or writer.protocol._paused
                or writer.transport.is_closing()):
            return False
        writer.transport.write(text_frame_header(len(frame)) + frame)
        return True

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            code, message = CloseCode.FRAME_TOO_LARGE, b"frame too large"
        return await super().close(code=code, message=message, drain=drain)


def text_frame_header(length: int) -> bytes:
    """RFC 6455 header of a final, unmasked text frame (server to client)."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)
