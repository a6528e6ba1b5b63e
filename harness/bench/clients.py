"""Lean benchmark clients: our WebSocket protocol, NATS over WebSocket, and SSE, all timing arrivals."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from harness.client.sse import read_events


@dataclass
class Arrivals:
    """When each world_update arrived, by snapshot version (one client's view)."""

    by_version: dict[int, float] = field(default_factory=dict)
    count: int = 0
    last_at: float = 0.0

    def record(self, version: int, at: float) -> None:
        """One world_update arrived at `at` (perf_counter seconds)."""
        self.by_version[version] = at
        self.count += 1
        self.last_at = at


class SocketListener:
    """What every WebSocket listener shares: its socket, its reader task, and how it closes."""

    ws: aiohttp.ClientWebSocketResponse | None
    task: asyncio.Task[None] | None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


class GatewayListener(SocketListener):
    """A player socket that records arrival times of world_update frames and its cursor.

    `rejoin` reconnects with `last_seq` after the gateway dropped it, as a real client would:
    exponential backoff with full jitter, until the replay ends with `resumed`.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.arrivals = Arrivals()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.last_seq: int | None = None
        self.resyncs = 0
        self.seen: list[str] = []  # this connection's first frames (type, and the connection id)
        self.trail: list[str] = []  # the last rejoin's attempts: what each waited for and how it ended
        self.rejoin_s = 0.0  # how long the last rejoin took

    async def start(self, last_seq: int | None = None) -> None:
        """Connect and wait for the snapshot (fresh) or the end of the replay (with last_seq)."""
        self.ready = asyncio.Event()
        self.seen = []
        url = self.url if last_seq is None else f"{self.url}&last_seq={last_seq}"
        self.ws = await self.http.ws_connect(url, max_msg_size=0, heartbeat=None)
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), 60)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            now = time.perf_counter()
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            if len(self.seen) < 4:
                self.seen.append(f"{kind} {frame['connection_id']}" if kind == "connected" else kind)
            if "seq" in frame:
                self.last_seq = frame["seq"]
            if kind == "world_update":
                self.arrivals.record(frame["snapshot_version"], now)
            elif kind in ("area_of_interest", "resumed"):
                self.ready.set()
            elif kind == "resync_required":
                self.resyncs += 1
            elif kind in ("action_response", "error") and frame.get("id") in self.answers:
                self.answers.pop(frame["id"]).set_result(frame)

    async def rejoin(self, deadline: float) -> float:
        """After a drop: reconnect with the cursor until resumed; returns when (perf_counter)."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        delay = 0.1
        began = time.perf_counter()
        self.trail = []
        while time.monotonic() < deadline:
            tried = time.perf_counter()
            try:
                await self.start(self.last_seq)
                self.rejoin_s = time.perf_counter() - began
                self.trail.append(f"+{tried - began:.1f}s resumed after {time.perf_counter() - tried:.1f}s "
                                  f"(saw {', '.join(self.seen)})")
                return time.perf_counter()
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                waited = f"waited {time.perf_counter() - tried:.1f}s for resumed, saw {', '.join(self.seen) or 'nothing'}"
                self.trail.append(f"+{tried - began:.1f}s {type(exc).__name__}"
                                  f"{' (' + waited + ')' if self.ws is not None and not self.ws.closed else ''}")
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 2.0)
        self.rejoin_s = time.perf_counter() - began
        raise TimeoutError("not resumed before the deadline")

    def slowest_note(self) -> str:
        """The last rejoin in one line: its time and each attempt (for the restart report's slowest sessions)."""
        return f"{self.rejoin_s:.1f} s: " + "; ".join(self.trail[-4:])

    async def act(self, msg_id: str, action: str, **args: Any) -> dict[str, Any]:
        assert self.ws is not None
        future = asyncio.get_running_loop().create_future()
        self.answers[msg_id] = future
        await self.ws.send_str(orjson.dumps({"type": "action", "id": msg_id, "action": action, **args}).decode())
        return await asyncio.wait_for(future, 30)


class ForwarderListener(SocketListener):
    """A socket of the minimal forwarder (harness/bench/floors/forwarder.py): raw broadcasts as text frames."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.arrivals = Arrivals()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect; the forwarder says `ready` once its subscription is in place (tried three times)."""
        for attempt in range(3):
            self.ws = await self.http.ws_connect(self.url, max_msg_size=0, heartbeat=None)
            first = await self.ws.receive(timeout=30)
            if first.type == aiohttp.WSMsgType.TEXT and first.data == "ready":
                self.task = asyncio.create_task(self._read())
                return
            await self.ws.close()
        raise ConnectionError(f"the forwarder did not get ready: {first.type} {first.data!r}")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            version = orjson.loads(msg.data).get("snapshot_version")
            if version is not None:  # presence of other phases' players is on the subject too
                self.arrivals.record(version, time.perf_counter())


class NatsWsListener(SocketListener):
    """A NATS client speaking the NATS protocol over nats-server's WebSocket listener (core SUB)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, subject: str, user: str, password: str) -> None:
        self.http = http
        self.url = url
        self.subject = subject
        self.login = {"user": user, "pass": password}
        self.arrivals = Arrivals()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self._buffer = b""
        self._ponged = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe; returns once the server answered the PING, so the SUB is in place."""
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0, heartbeat=None)
        connect = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True, **self.login}
        await self.ws.send_bytes(b"CONNECT " + orjson.dumps(connect) + f"\r\nSUB {self.subject} 1\r\nPING\r\n".encode())
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ponged.wait(), 30)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            now = time.perf_counter()
            self._buffer += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            await self._parse(now)

    async def _parse(self, now: float) -> None:
        assert self.ws is not None
        buf = self._buffer
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            line = buf[:end]
            if line.startswith((b"MSG ", b"HMSG ")):  # HMSG: headers first, their size before the total
                tokens = line.split(b" ")
                size, headers = int(tokens[-1]), int(tokens[-2]) if line.startswith(b"H") else 0
                if len(buf) < end + 2 + size + 2:
                    break
                body = buf[end + 2 + headers:end + 2 + size]
                version = orjson.loads(body).get("snapshot_version")
                if version is not None:  # presence of other phases' players is on the subject too
                    self.arrivals.record(version, now)
                buf = buf[end + 2 + size + 2:]
                continue
            if line == b"PING":
                await self.ws.send_bytes(b"PONG\r\n")
            elif line == b"PONG":
                self._ponged.set()
            buf = buf[end + 2:]
        self._buffer = buf


class SseListener:
    """A persistent EventSource stream recording world_update arrivals."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.arrivals = Arrivals()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), 30)

    async def _read(self) -> None:
        async with self.http.get(self.url, headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=aiohttp.ClientTimeout(total=None)) as resp:
            self.ready.set()
            async for event in read_events(resp):
                now = time.perf_counter()
                frame = event.json()
                if frame.get("type") == "world_update":
                    self.arrivals.record(frame["snapshot_version"], now)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
