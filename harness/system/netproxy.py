"""A TCP proxy that can make a phone's network go silent: nothing forwarded, nothing closed."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from harness.system.procs import free_port

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


class SilentProxy:
    """Forwards 127.0.0.1:port to a target port; `silence()` freezes every current connection.

    A silenced connection keeps both sockets open and reads nothing more from either side: no
    reset, no FIN, as when a phone's radio loses the network. New connections are forwarded
    again (the network came back).

    `outage()` goes further: the current connections are silenced and every new one is accepted
    and swallowed (read, never answered, never forwarded, never closed), as a network whose
    packets vanish after the TCP handshake; `heal()` forwards new connections again while the
    swallowed ones stay lost. With no outage it behaves as before.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = free_port()
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._pumps: dict[asyncio.Task[None], str] = {}  # pump -> "up" (client to target) or "down"
        self._writers: set[asyncio.StreamWriter] = set()  # held open while frozen: closing would tell the peers
        self._swallowing = False
        self.swallowed: list[bytes] = []  # per swallowed connection, the first bytes it sent (its upgrade request)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "SilentProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._swallowing:
            self._writers.add(writer)
            index = len(self.swallowed)
            self.swallowed.append(b"")
            task = asyncio.create_task(self._swallow(reader, index))
            self._pumps[task] = "swallow"
            task.add_done_callback(lambda t: self._pumps.pop(t, None))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()  # the target is down: refuse as a dead server would
            return
        self._writers |= {writer, up_writer}
        for direction, src, dst in (("up", reader, up_writer), ("down", up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst, (writer, up_writer)))
            self._pumps[task] = direction
            task.add_done_callback(lambda t: self._pumps.pop(t, None))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    both: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        for writer in both:  # one side ended: end the other, as a router passing the FIN/RST would
            writer.close()
            self._writers.discard(writer)

    async def _swallow(self, reader: asyncio.StreamReader, index: int) -> None:
        """Read what a swallowed connection sends (keeping its first bytes), answer nothing, close nothing."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                if len(self.swallowed[index]) < CHUNK:
                    self.swallowed[index] += data

    async def outage(self) -> int:
        """The network is gone: silence every current connection and swallow every new one until `heal()`."""
        self._swallowing = True
        frozen = await self.silence(("up", "down"))
        log.info("proxy :%d outage: new connections are swallowed", self.port)
        return frozen

    def heal(self) -> None:
        """The network is back for new connections; those swallowed during the outage stay lost."""
        self._swallowing = False
        log.info("proxy :%d healed after swallowing %d connections", self.port, len(self.swallowed))

    async def silence(self, directions: tuple[str, ...] = ("up", "down")) -> int:
        """Stop forwarding `directions` ("up": client to target, "down") on all current connections; close nothing."""
        pumps = [task for task, direction in self._pumps.items() if direction in directions]
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("proxy :%d silenced %d pumps (%s)", self.port, len(pumps), "+".join(directions))
        return len(pumps)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*list(self._pumps), return_exceptions=True)
        for writer in self._writers:
            writer.close()
        self._writers.clear()
