"""A crowd's clients in several processes: lean WebSocket readers that stamp each copy and time its parse.

One Python process parsing a thousand copies of every event in turn measures itself, not the
server. `CrowdProcess` starts a process (multiprocessing, spawn) holding a share of the players on
plain asyncio sockets (the upgrade by hand, unmasked server frames parsed in place, pings
answered), each copy stamped with the wall clock when its bytes were read and the time its own
`orjson.loads` took. The parent tells it what to do over a pipe.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import os
import random
import struct
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import orjson

log = logging.getLogger(__name__)
Copy = tuple[int, int, float, float]  # seq, snapshot_version, read at (wall clock s), parse (s)
Seen = tuple[int, int, float]  # a game room's copy: snapshot_version, the reading player's index, read at (wall clock)
Acted = tuple[int, int, float]  # a game room's change: snapshot_version, the acting player's index, sent at


class CrowdSocket(asyncio.Protocol):
    """One player's socket: upgrade, then every world_update copy recorded; pings answered."""

    def __init__(self, copies: list[Copy], ready: asyncio.Future[None]) -> None:
        self.copies = copies
        self.ready = ready
        self.player: Player | None = None  # set when this socket plays (a game-loaded room)
        self.area = ""  # where its snapshot put the player
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if b" 101 " not in buf[:end]:
                self._fail(f"upgrade refused: {buf[:end][:80]!r}")
                return
            self.upgraded, buf = True, buf[end + 4:]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < head + length:
                break
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            if opcode == 0x1:
                self._text(payload, now)
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.transport and self.transport.close()
        self.buffer = buf[pos:]

    def _text(self, payload: bytes, now: float) -> None:
        started = time.perf_counter()
        frame = orjson.loads(payload)
        parse = time.perf_counter() - started
        kind = frame.get("type")
        if self.player is not None:
            self.player.frame(kind, frame, now)
        elif kind == "world_update":
            self.copies.append((frame["seq"], frame["snapshot_version"], now, parse))
        elif kind == "area_of_interest":
            self.area = frame["player"]["current_area"]
            if not self.ready.done():
                self.ready.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 requires of clients)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = struct.pack("!B", 0x80 | len(payload)) if len(payload) < 126 else struct.pack("!BH", 0x80 | 126,
                                                                                                len(payload))
        self.transport.write(struct.pack("!B", 0x80 | opcode) + size + mask + masked)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the snapshot: {exc}"))


class Player:
    """A game-loaded room's player on one socket: every `every_s` one action of a game's mix (a walk through an
    exit, a collect of an item that began in its area, a drop of what it holds), each copy it reads recorded."""

    def __init__(self, sock: CrowdSocket, index: int, game: dict[str, Any], seen: list[Seen],
                 acted: list[Acted]) -> None:
        self.sock, self.index, self.game, self.seen, self.acted = sock, index, game, seen, acted
        self.area = sock.area or game["start_area"]
        self.holding: list[str] = []
        self.asked: dict[str, tuple[float, str, dict[str, Any]]] = {}  # id -> (sent at, action, frame)
        self.rng = random.Random(index)
        self.count = 0

    def frame(self, kind: str | None, frame: dict[str, Any], now: float) -> None:
        if kind == "world_update":
            self.seen.append((frame["snapshot_version"], self.index, now))
        elif kind == "area_of_interest":
            self.area = frame["player"]["current_area"]
            if not self.sock.ready.done():
                self.sock.ready.set_result(None)
        elif kind in ("action_response", "error") and frame.get("id") in self.asked:
            sent_at, action, args = self.asked.pop(frame["id"])
            if kind == "action_response" and frame.get("success"):
                if frame.get("snapshot_version") is not None:
                    self.acted.append((frame["snapshot_version"], self.index, sent_at))
                if action == "go":
                    self.area = args["destination"]
                elif action == "collect_item":
                    self.holding.append(args["instance_id"])
                elif action == "drop_item" and args["instance_id"] in self.holding:
                    self.holding.remove(args["instance_id"])

    def act(self) -> None:
        """One action of the mix, sent now."""
        roll = self.rng.random()
        if roll < 0.2 and self.holding:
            action, args = "drop_item", {"instance_id": self.holding[0]}
        elif roll < 0.4 and self.game["items"].get(self.area):
            action, args = "collect_item", {"instance_id": self.rng.choice(self.game["items"][self.area])}
        else:
            action, args = "go", {"destination": self.rng.choice(self.game["exits"][self.area])}
        self.count += 1
        ident = f"g{self.index}.{self.count}"
        self.asked[ident] = (time.time(), action, args)
        self.sock._send(0x1, orjson.dumps({"type": "action", "id": ident, "action": action, **args}))

    async def play(self, every_s: float, until: float) -> None:
        """Act every `every_s` until `until` (wall clock), starting at a random point of the first period."""
        await asyncio.sleep(self.rng.random() * every_s)
        while time.time() < until and self.sock.transport is not None and not self.sock.transport.is_closing():
            self.act()
            await asyncio.sleep(every_s)


async def open_socket(url: str, copies: list[Copy]) -> CrowdSocket:
    """Connect, upgrade and wait for the snapshot."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    _, proto = await loop.create_connection(lambda: CrowdSocket(copies, ready), parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await asyncio.wait_for(ready, 60)
    return proto


async def connect_all(urls: list[str], copies: list[Copy], in_flight: int = 25) -> list[CrowdSocket]:
    """Open every socket, at most `in_flight` upgrading at once."""
    slots = asyncio.Semaphore(in_flight)

    async def one(url: str) -> CrowdSocket:
        async with slots:
            return await open_socket(url, copies)
    return list(await asyncio.gather(*(one(u) for u in urls)))


async def serve(conn: Connection) -> None:
    """The child's loop: `connect` urls, `take` the copies so far, `close`; each answered over the pipe."""
    loop = asyncio.get_running_loop()
    copies: list[Copy] = []
    sockets: list[CrowdSocket] = []
    seen: list[Seen] = []
    acted: list[Acted] = []
    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "connect":
            try:
                sockets += await connect_all(arg, copies)
                conn.send(("ok", len(sockets)))
            except Exception as exc:  # noqa: BLE001 - the parent reports it and stops the run
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
        elif command == "take":
            taken, copies[:] = list(copies), []
            conn.send(("ok", taken))
        elif command == "play":  # arg: {"every_s", "seconds", "first" (index of our first socket), "game"}
            until = time.time() + arg["seconds"]
            for i, sock in enumerate(sockets):  # a player keeps where it is and what it holds between rounds
                sock.player = sock.player or Player(sock, arg["first"] + i, arg["game"], seen, acted)
            players = [sock.player for sock in sockets if sock.player is not None]
            await asyncio.gather(*(player.play(arg["every_s"], until) for player in players))
            conn.send(("ok", len(players)))
        elif command == "take_play":
            played = (list(seen), list(acted))
            seen[:], acted[:] = [], []
            conn.send(("ok", played))
        elif command == "count":
            conn.send(("ok", len(copies)))
        elif command == "close":
            for sock in sockets:
                if sock.transport is not None:
                    sock._send(0x8, struct.pack("!H", 1000))
                    sock.transport.close()
            conn.send(("ok", None))
            return


def child_main(conn: Connection) -> None:
    """Entry point of a crowd process."""
    try:
        import uvloop
        uvloop.run(serve(conn))
    except ImportError:
        asyncio.run(serve(conn))


class CrowdProcess:
    """One child process holding some of the crowd's sockets."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    async def ask(self, command: str, arg: Any = None, timeout: float = 300.0) -> Any:
        """Send a command and wait for its answer without blocking the caller's loop."""
        self.conn.send((command, arg))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.conn.poll, timeout):
            raise TimeoutError(f"crowd process {self.proc.pid} did not answer {command} within {timeout:.0f} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"crowd process {self.proc.pid}: {value}")
        return value

    def stop(self) -> None:
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
