"""The soak's light clients: WebSocket chains that remember only what the loss check needs, SSE readers, chats."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from array import array
from typing import Any

import aiohttp
import orjson

from harness.client.ws import cut
from shared.auth import issue_token
from shared.config import Settings

EXPERIENCE = "wylding-woods"
# The zone's exits (kb/data/wylding-woods/zone.json): a move goes to one of them.
EXITS = {"entrance": ("main_room", "garden"), "main_room": ("entrance", "counter", "back_room"),
         "counter": ("main_room",), "back_room": ("main_room", "garden"), "garden": ("entrance", "back_room")}
MIX = (("go", 0.6), ("talk", 0.2), ("examine", 0.2))  # a game's mix: moves most of all, then NPC talk and looks


class Chain:
    """One player's session chain: a first connect, then any number of resumes with its cursor.

    It keeps the sequence numbers it received (8 bytes each) and the few frames that matter to
    the loss check (snapshots and resync_required, with the position they arrived at), never the
    frames themselves: a soak delivers millions.
    """

    _ids = itertools.count(1)

    def __init__(self, user: str, token: str, keep: bool = False) -> None:
        self.user = user
        self.kept: list[dict[str, Any]] | None = [] if keep else None  # every frame, for a sampled player's checks
        self.token = token
        self.seqs = array("q")
        self.marks: list[tuple[int, dict[str, Any]]] = []  # (len(seqs) when it came, the frame)
        self.cursor: int | None = None
        self.left_at: float | None = None  # wall time of the last leave (bounds what a chain with no event owed)
        self.close_codes: list[int] = []  # closes this client did not ask for (server closes, lost connections)
        self._leaving = False
        self.area = "entrance"
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._snapshot = asyncio.Event()

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def connect(self, http: aiohttp.ClientSession, base: str, resume: bool) -> None:
        """Open the socket (with last_seq when resuming) and wait for the snapshot or the replay to start."""
        url = f"{base.replace('http', 'ws', 1)}/ws/experience?experience={EXPERIENCE}&token={self.token}"
        if resume and self.cursor is not None:
            url += f"&last_seq={self.cursor}"
        else:
            self.marks.clear()  # no cursor: a new chain, checked from its own snapshot on
            del self.seqs[:]
            if self.kept is not None:
                self.kept.clear()
        self._snapshot.clear()
        self._leaving = False
        self.ws = await http.ws_connect(url, heartbeat=None, max_msg_size=0)
        self.reader = asyncio.create_task(self._read(self.ws))
        if not (resume and self.cursor is not None):
            await asyncio.wait_for(self._snapshot.wait(), 20)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            if self.kept is not None:
                self.kept.append(frame)
            seq = frame.get("seq")
            kind = frame.get("type")
            if seq is not None:
                self.seqs.append(seq)
                self.cursor = seq if self.cursor is None else max(self.cursor, seq)
            elif kind in ("area_of_interest", "resync_required"):
                self.marks.append((len(self.seqs), {"type": kind, "snapshot_version": frame.get("snapshot_version"),
                                                    "reason": frame.get("reason")}))
                if kind == "area_of_interest":
                    self.area = frame["player"]["current_area"]
                    self._snapshot.set()
            elif kind in ("action_response", "error") and frame.get("id") in self._answers:
                self._answers.pop(frame["id"]).set_result(frame)
            elif kind == "resumed":
                self.marks.append((len(self.seqs), {"type": kind, "to_seq": frame["to_seq"]}))
                if frame["to_seq"] > (self.cursor or 0):
                    self.cursor = frame["to_seq"]
        if not self._leaving:
            self.close_codes.append(ws.close_code or 1006)
            self.left_at = time.time()
        for waiter in self._answers.values():
            waiter.cancel()
        self._answers.clear()

    async def act(self, rng: random.Random) -> float | None:
        """One action of the game-like mix (`MIX`: a step through an exit, a word to an NPC, a look around);
        its latency in ms, None if cut off."""
        if not self.open:
            return None
        ident = f"s{next(self._ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[ident] = waiter
        kind = rng.choices([name for name, _ in MIX], [share for _, share in MIX])[0]
        moving = kind == "go"
        frame: dict[str, Any] = {"type": "action", "id": ident, "action": kind}
        if moving:
            frame["destination"] = rng.choice(EXITS.get(self.area, ("entrance",)))
        elif kind == "talk":
            frame.update(npc_id="louisa", message="hello")
        started = time.perf_counter()
        try:
            assert self.ws is not None
            await self.ws.send_str(orjson.dumps(frame).decode())
            answer = await asyncio.wait_for(waiter, 15)
        except (asyncio.CancelledError, asyncio.TimeoutError, ConnectionError, aiohttp.ClientError, AssertionError):
            self._answers.pop(ident, None)
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return None
        if moving and answer.get("success"):
            self.area = frame["destination"]
        return (time.perf_counter() - started) * 1000

    async def leave(self, clean: bool) -> None:
        """Close with 1000 (a clean leave) or cut the connection without a close frame (a dropped phone)."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        self._leaving = True
        self.left_at = time.time()
        if clean:
            await ws.close()
        else:
            cut(ws)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)

    def count(self, kind: str) -> int:
        """How many frames of this kind (resumed, resync_required, area_of_interest) the chain has had."""
        return sum(1 for _, frame in self.marks if frame["type"] == kind)

    def caught_up(self, end_seq: int, last_version: int) -> bool:
        """At the stream's end: its cursor there, or its latest frame a snapshot at the world's last version
        (a resync's snapshot carries no seq, and nothing follows it when it covers everything)."""
        if self.cursor is not None and self.cursor >= end_seq:
            return True
        if not self.marks:
            return False
        at, last = self.marks[-1]
        return at == len(self.seqs) and last["type"] == "area_of_interest" and last["snapshot_version"] >= last_version

    def frames(self) -> list[dict[str, Any]]:
        """The received sequence numbers and marks, in arrival order, shaped like frames for verify.py."""
        out: list[dict[str, Any]] = []
        marks = iter(self.marks)
        mark = next(marks, None)
        for index, seq in enumerate(itertools.chain(self.seqs, [None])):
            while mark is not None and mark[0] == index:
                out.append(mark[1])
                mark = next(marks, None)
            if seq is not None:
                out.append({"seq": seq})
        return out


class SseReader:
    """A persistent /sse/experience stream that reconnects with Last-Event-ID; counts what it got."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.events = 0
        self.opens = 0
        self.cut_by_server = 0
        self.last_id: str | None = None

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}"}
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                async with http.get(f"{self.base}/sse/experience?experience={EXPERIENCE}", headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                    self.opens += 1
                    async for line in resp.content:
                        if line.startswith(b"id: "):
                            self.last_id = line[4:].strip().decode()
                        elif line.startswith(b"data: "):
                            self.events += 1
                        if stop.is_set():
                            return
                self.cut_by_server += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.cut_by_server += 1
            await asyncio.sleep(0.5)


class ChatDriver:
    """POST /chat/unified at a steady rate from random online players; counts answers and failures."""

    def __init__(self, base: str, settings: Settings) -> None:
        self.base, self.settings = base, settings
        self.done = 0
        self.failed = 0
        self.latencies_ms: list[float] = []

    async def one(self, http: aiohttp.ClientSession, user: str) -> None:
        token = issue_token(self.settings, user)
        started = time.perf_counter()
        try:
            async with http.post(f"{self.base}/chat/unified", headers={"Authorization": f"Bearer {token}"},
                                 json={"message": "look around", "experience": EXPERIENCE, "stream": True},
                                 timeout=aiohttp.ClientTimeout(total=30)) as resp:
                body = await resp.read()
            if resp.status == 200 and b"[DONE]" in body:
                self.done += 1
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                self.failed += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.failed += 1
