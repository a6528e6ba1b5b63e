"""An async client for the gateway's WebSocket protocol, for players, scenarios and tests."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections import defaultdict, deque
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import aiohttp
import orjson

from harness.client.world import LocalWorld


class ChatError(Exception):
    """A chat ended with an `error` frame (kept as `.frame`)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame


class GaiaClient:
    """One player's connection: send actions, await answers, keep a local world, track `seq`.

    ```python
    async with GaiaClient("http://127.0.0.1:8000", token, "wylding-woods") as player:
        answer = await player.act("collect_item", instance_id="dream_bottle_1")
        update = await player.next("world_update")
    ```
    """

    def __init__(self, base_url: str, token: str, experience: str,
                 http: aiohttp.ClientSession | None = None, use_header: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.experience = experience
        self.use_header = use_header
        self.world = LocalWorld()
        self.frames: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.last_seq: int | None = None
        self.connected: dict[str, Any] | None = None
        self.close_code: int | None = None
        self.received_at: dict[int, float] = {}
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queues: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        self._answers: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._chats: dict[Any, asyncio.Queue[dict[str, Any]]] = {}

    async def __aenter__(self) -> "GaiaClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def url(self, last_seq: int | None = None) -> str:
        """The WebSocket URL (token in the query unless use_header)."""
        query: dict[str, Any] = {"experience": self.experience}
        if not self.use_header:
            query["token"] = self.token
        if last_seq is not None:
            query["last_seq"] = last_seq
        return self.base_url.replace("http", "ws", 1) + "/ws/experience?" + urlencode(query)

    async def connect(self, last_seq: int | None = None, wait_for: str | None = "connected",
                      timeout: float = 10.0) -> dict[str, Any] | None:
        """Open the socket (optionally resuming after last_seq) and wait for the first frame."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.token}"} if self.use_header else None
        self._ws = await self._http.ws_connect(self.url(last_seq), headers=headers, max_msg_size=0,
                                               timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        self.close_code = None
        self._reader = asyncio.create_task(self._read())
        if wait_for is None:
            return None
        self.connected = await self.next(wait_for, timeout=timeout)
        return self.connected

    async def reconnect(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Drop the socket abruptly and connect again with last_seq, like a phone coming back."""
        await self.drop()
        return await self.connect(last_seq=self.last_seq, timeout=timeout)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            self._on_frame(orjson.loads(msg.data))
        self.close_code = self._ws.close_code
        self._fail_pending(ConnectionError(f"socket closed ({self.close_code})"))
        async with self._arrived:
            self._arrived.notify_all()

    def _fail_pending(self, exc: Exception) -> None:
        """Actions still waiting for an answer will never get one on this socket."""
        answers, self._answers = self._answers, {}
        for future in answers.values():
            if not future.done():
                future.set_exception(exc)

    @property
    def is_open(self) -> bool:
        """True while the socket is up and being read."""
        return self._ws is not None and not self._ws.closed and self._reader is not None and not self._reader.done()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        frame_type = frame.get("type", "?")
        self.frames.append(frame)
        if "seq" in frame:
            self.seqs.append(frame["seq"])
            self.last_seq = frame["seq"]
            self.received_at[frame["seq"]] = time.perf_counter()
        self.world.apply(frame)
        if frame_type in ("chat_chunk", "chat_done", "error") and frame.get("id") in self._chats:
            self._chats[frame["id"]].put_nowait(frame)
        if frame_type in ("action_response", "error") and frame.get("id") in self._answers:
            future = self._answers.pop(frame["id"])
            if not future.done():
                future.set_result(frame)
        self._queues[frame_type].append(frame)
        if frame_type == "presence_batch":  # also one `presence` per change, for code that waits on those
            self._queues["presence"].extend({"type": "presence", "experience": frame["experience"], "seq": frame.get("seq"), **change}
                                            for change in frame["changes"] if change["user_id"] != self.user_id)
        asyncio.get_running_loop().create_task(self._notify())

    @property
    def user_id(self) -> str | None:
        """This client's player, from the `connected` frame."""
        return self.connected["user_id"] if self.connected else None

    @property
    def roster(self) -> dict[str, str]:
        """Who is present in the experience and where (self included), kept current from presence frames."""
        return self.world.roster

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def next(self, frame_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next not-yet-taken frame of this type (waits for it)."""
        queue = self._queues[frame_type]
        deadline = time.monotonic() + timeout
        async with self._arrived:
            while not queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {frame_type!r} frame within {timeout}s (close={self.close_code})")
                if self._reader is not None and self._reader.done() and not queue:
                    raise ConnectionError(f"socket closed ({self.close_code}) while waiting for {frame_type!r}")
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            return queue.popleft()

    async def reached(self, version: int, timeout: float = 5.0) -> None:
        """Wait until the local world is at `version` or later (e.g. an action_response's snapshot_version)."""
        deadline = time.monotonic() + timeout
        async with self._arrived:
            while self.world.version < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"local world at v{self.world.version}, not v{version}, after {timeout}s")
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    def drain(self, frame_type: str) -> list[dict[str, Any]]:
        """Take every queued frame of this type without waiting."""
        queue = self._queues[frame_type]
        items = list(queue)
        queue.clear()
        return items

    async def send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(orjson.dumps(frame).decode())

    async def act(self, action: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """Send an action and wait for its action_response (or error) by id."""
        msg_id = f"a{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[msg_id] = future
        try:
            await self.send({"type": "action", "id": msg_id, "action": action, **args})
            return await asyncio.wait_for(future, timeout)
        finally:
            self._answers.pop(msg_id, None)

    async def chat(self, message: str, conversation_id: str | None = None,
                   timeout: float = 10.0) -> AsyncIterator[dict[str, Any]]:
        """Say a line; yields its `chat_chunk` frames, then its `chat_done`. An `error` raises ChatError.

        ```python
        async for frame in player.chat("take dream bottle"):
            print(frame.get("delta", ""), end="")
        ```
        """
        msg_id = f"c{next(self._ids)}"
        frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._chats[msg_id] = frames
        try:
            request = {"type": "chat", "id": msg_id, "message": message}
            await self.send({**request, "conversation_id": conversation_id} if conversation_id else request)
            while True:
                frame = await asyncio.wait_for(frames.get(), timeout)
                if frame["type"] == "error":
                    raise ChatError(frame)
                yield frame
                if frame["type"] == "chat_done":
                    return
        finally:
            self._chats.pop(msg_id, None)

    async def get_state(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask for a fresh area_of_interest and wait for it."""
        self.drain("area_of_interest")
        await self.send({"type": "get_state"})
        return await self.next("area_of_interest", timeout)

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip time of a ping, in milliseconds."""
        started = time.perf_counter()
        await self.send({"type": "ping", "timestamp": int(time.time() * 1000)})
        await self.next("pong", timeout)
        return (time.perf_counter() - started) * 1000

    async def drop(self) -> None:
        """Vanish without a close frame (network loss)."""
        if self._ws is not None:
            cut(self._ws)
        await self._stop_reader()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 1.0)

    async def close(self, code: int = 1000) -> None:
        """Close cleanly (1000 leaves presence at once)."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.close(code=code)
        await self._stop_reader()
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        self._fail_pending(ConnectionError("socket dropped"))

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait until the server closes the socket; returns the close code."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code


def cut(ws: aiohttp.ClientWebSocketResponse) -> None:
    """End a client socket without a close frame, as a lost network would."""
    sock = ws.get_extra_info("socket")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, TypeError, AttributeError):
        # uvloop hands out a socket-like object without shutdown(): cut the transport instead.
        connection = ws._response.connection  # aiohttp exposes no public way to abort
        if connection is not None and connection.transport is not None:
            connection.transport.abort()
