"""FrameGuard: every frame a client sends is charged to its session before aiohttp parses it.

aiohttp's WebSocketReader (the compiled `reader_c`) hands the session finished messages, pings, pongs
and closes; a continuation frame of a message that never ends reaches nobody, and raw bytes reset
the heartbeat. So the budget the session kept on finished text messages could not see a flood of
empty continuation frames or pings (issue 38: 65.7 M frames in 10 s, 7.2 CPU-seconds, never closed).

The guard is the protocol's payload parser (GatewayWebSocket installs it in front of aiohttp's): each
chunk read from the socket comes here first. It reads the frame headers (2 to 14 bytes a frame;
payloads are skipped by arithmetic, never copied), charges the chunk's bytes and each frame to the
session's buckets, bounds a fragmented message in frames, bytes and time, and refuses unmasked
frames (RFC 6455 5.1). Only then is the chunk handed to aiohttp's reader. The
first breach stops the guard for good: nothing more is parsed, and the socket is closed by
`on_abuse` (gateway/ws/socket.py) without reading further.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from gateway.edge.buckets import TokenBucket
from shared.config import Settings
from shared.schemas.errors import CloseCode

PROTOCOL_ERROR = 1002  # RFC 6455 7.4.1
NOTHING = (False, b"")  # what aiohttp's protocol expects back from a parser: not at EOF, no tail


class Parser(Protocol):
    """What aiohttp's protocol calls on its payload parser (aiohttp's WebSocketReader, or a guard)."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


@dataclass(frozen=True)
class FrameLimits:
    """A session's budgets for what its client sends, from the settings."""

    frame_rate_per_s: float
    frame_burst: int
    bytes_per_s: float
    bytes_burst: int
    message_max_bytes: int
    message_max_frames: int
    message_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "FrameLimits":
        return cls(settings.frame_rate_per_s, settings.frame_burst, settings.bytes_per_s, settings.bytes_burst,
                   settings.max_frame_bytes, settings.message_max_frames, settings.message_max_s)


class FrameGuard:
    """Reads frame headers ahead of aiohttp's reader and charges them to the session's budgets."""

    # Slots: one per socket, thousands at once.
    __slots__ = ("parser", "limits", "on_abuse", "stopped", "_frames", "_bytes", "_head", "_skip", "_in_message",
                 "_message_frames", "_message_bytes", "_timer")

    def __init__(self, parser: Parser, limits: FrameLimits, on_abuse: Callable[[int, str], None]) -> None:
        self.parser = parser
        self.limits = limits
        self.on_abuse = on_abuse  # (close code, reason): called once, at the first breach
        self.stopped = False
        self._frames = TokenBucket(limits.frame_rate_per_s, limits.frame_burst)
        self._bytes = TokenBucket(limits.bytes_per_s, limits.bytes_burst)
        self._head = b""  # a frame header cut by the end of a chunk
        self._skip = 0  # payload bytes of the current frame still to come
        self._in_message = False  # a data frame without FIN was seen: its message is unfinished
        self._message_frames = 0
        self._message_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """A chunk from the socket: charged, then parsed by aiohttp, or dropped once the guard stopped."""
        if self.stopped:
            return NOTHING
        breach = self._scan(data)
        if breach is not None:
            self.stop(*breach)
            return NOTHING
        return self.parser.feed_data(data)

    def feed_eof(self) -> None:
        self._cancel_timer()
        self.parser.feed_eof()

    def stop(self, code: int, reason: str) -> None:
        """Nothing more is parsed; the owner closes the socket."""
        if self.stopped:
            return
        self.stopped = True
        self._cancel_timer()
        self.on_abuse(code, reason)

    def _scan(self, data: bytes) -> tuple[int, str] | None:
        """Walk the frame headers in `data`; the first breach of a budget, if any."""
        now = time.monotonic()
        if not self._bytes.take(len(data), now):
            return CloseCode.TOO_MANY_MESSAGES, "too many bytes"
        pos = min(self._skip, len(data))  # the rest of a payload begun in an earlier chunk
        self._skip -= pos
        if self._head:
            data, pos, self._head = self._head + data[pos:], 0, b""
        size = len(data)
        while pos < size:
            if size - pos < 2:
                self._head = data[pos:]
                break
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            header = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & 0x80 else 0)
            if size - pos < header:
                self._head = data[pos:]
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
            breach = self._frame(first, bool(second & 0x80), length, now)
            if breach is not None:
                return breach
            pos += header + length
        if pos > size:
            self._skip = pos - size
        if self._in_message and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.limits.message_max_s, self._too_slow)
        return None

    def _frame(self, first: int, masked: bool, length: int, now: float) -> tuple[int, str] | None:
        """One frame's header: its cost, and the bounds of the message it belongs to."""
        if not masked:
            return PROTOCOL_ERROR, "client frames must be masked"
        if not self._frames.take(1.0, now):
            return CloseCode.TOO_MANY_MESSAGES, "too many frames"
        opcode = first & 0x0F
        if opcode >= 8:  # a control frame: may come between the fragments of a message
            return None
        if opcode:  # text or binary: a message starts (a continuation goes on with the current one)
            self._message_frames = self._message_bytes = 0
        self._message_frames += 1
        self._message_bytes += length
        limits = self.limits
        if self._message_bytes >= limits.message_max_bytes:  # as aiohttp's own bound (then 1009, ours 4413)
            return CloseCode.FRAME_TOO_LARGE, "message too large"
        if self._message_frames > limits.message_max_frames:
            return CloseCode.FRAME_TOO_LARGE, "message in too many frames"
        if first & 0x80:  # FIN: the message is whole
            self._in_message = False
            self._cancel_timer()
        else:
            self._in_message = True
        return None

    def _too_slow(self) -> None:
        """A fragmented message still unfinished after `message_max_s`."""
        self._timer = None
        if self._in_message and not self.stopped:
            self.stop(CloseCode.FRAME_TOO_LARGE, "message unfinished for too long")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
