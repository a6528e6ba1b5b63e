"""A raw WebSocket client: any frame (fragments, pings, pongs, unmasked ones), and a socket that never reads.

For hostile tests and probes (issue 38); players use GaiaClient (harness/client/ws.py), which
speaks the protocol properly.
"""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from urllib.parse import urlencode, urlsplit

TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True) -> bytes:
    """One client frame; masked with a zero key unless `mask` is False (RFC 6455 5.3: any key will do)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    return head + (b"\0\0\0\0" if mask else b"") + payload  # a zero key leaves the payload as it is


class RawSocket:
    """One upgraded connection to the gateway, written to byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str, token: str, experience: str, rcvbuf: int | None = None) -> "RawSocket":
        """Connect and upgrade; `rcvbuf` makes the kernel's receive buffer small (a phone that stops
        reading fills it fast, and then the gateway's writes back up into the gateway)."""
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/ws/experience?" + urlencode({"experience": experience, "token": token})
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        return cls(reader, writer)

    def stop_reading(self) -> None:
        """Read nothing more: what the gateway sends piles up in the kernel, then in the gateway."""
        self.writer.transport.pause_reading()

    async def send(self, data: bytes) -> None:
        """Write and wait until the kernel took it (ConnectionError once the gateway is gone)."""
        self.writer.write(data)
        await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        """The gateway's next frame: (opcode, payload); IncompleteReadError at the end of the stream."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def close_code(self) -> int | None:
        """Read until the gateway's close frame: its code (None if the connection ended without one)."""
        try:
            while True:
                opcode, payload = await self.next_frame()
                if opcode == CLOSE:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def ended(self) -> bool:
        """Wait until the gateway closes the connection (EOF or reset); True once it has."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        return True

    def abort(self) -> None:
        self.writer.transport.abort()
