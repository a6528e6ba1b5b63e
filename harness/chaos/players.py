"""The players of a cluster chaos run: WebSocket players that keep a ledger, SSE watchers, and a stream observer."""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import nats
import orjson

from harness.checks.verify import EXPERIENCE
from harness.client.player import SimPlayer
from harness.client.sse import read_events
from shared.subjects import experience_updates

# The actions whose success is a commit of their own (examine and talk answer from the world as it is).
COMMITTING = frozenset({"go", "collect_item", "drop_item"})


@dataclass(frozen=True)
class Answer:
    """One action's answer as the player got it: when, and the version kb said it committed."""

    at: float  # when the answer came
    sent_at: float  # when the action was sent
    action: str
    success: bool
    version: int | None  # the version it committed (None: refused, failed, or changed nothing)
    error: str | None


class LedgerPlayer(SimPlayer):
    """A SimPlayer that records every action it sent and every answer (for the committed-once check)."""

    def __init__(self, urls: list[str], token: str, rng: random.Random) -> None:
        super().__init__(urls, token, EXPERIENCE, rng)
        self.sent = 0
        self.in_flight = 0  # actions sent and not answered yet
        self.answers: list[Answer] = []

    async def step(self) -> None:
        """One random action, recorded before it is sent and when it is answered (or fails)."""
        if self.client.world.gaps > self._gaps_seen:
            await super().step()  # the gap repair, counted as such
            return
        action, args = self.choose()
        self.sent += 1
        started, sent_at = time.perf_counter(), time.monotonic()
        self.in_flight += 1
        try:
            answer = await self.client.act(action, **args)
        except BaseException:
            self.answers.append(Answer(time.monotonic(), sent_at, action, False, None, "no answer"))
            raise
        finally:
            self.in_flight -= 1
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.stats.actions += 1
        if answer["type"] == "error":
            self.stats.errors[answer["code"]] = self.stats.errors.get(answer["code"], 0) + 1
            self.answers.append(Answer(time.monotonic(), sent_at, action, False, None, answer["code"]))
            return
        ok = bool(answer["success"])
        self.stats.succeeded += ok
        self.stats.refused += not ok
        committed = answer.get("snapshot_version") if ok and action in COMMITTING else None
        self.answers.append(Answer(time.monotonic(), sent_at, action, ok, committed, None))

    @property
    def last_seq(self) -> int:
        return self.client.last_seq or 0


class SseWatcher:
    """A persistent /sse/experience stream resumed with Last-Event-ID, moving to the next gateway when cut."""

    def __init__(self, urls: list[str], token: str, user: str) -> None:
        self.urls, self.token, self.user = urls, token, user
        self.frames: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.last_id: str | None = None
        self.opens = 0
        self.reconnects = 0
        self.open = False
        self._index = 0

    @property
    def last_seq(self) -> int:
        return int(self.last_id) if self.last_id else 0

    async def run(self, stop: asyncio.Event) -> None:
        """Read until `stop`; a cut stream is reopened (on the other gateway after a failure) at once."""
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                headers = {"Authorization": f"Bearer {self.token}"}
                if self.last_id:
                    headers["Last-Event-ID"] = self.last_id
                url = f"{self.urls[self._index]}/sse/experience?experience={EXPERIENCE}"
                try:
                    async with http.get(url, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=None, connect=3, sock_read=30)) as resp:
                        if resp.status != 200:
                            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                        self.opens += 1
                        self.open = True
                        reader = asyncio.ensure_future(self._read(resp))
                        waiter = asyncio.ensure_future(stop.wait())
                        await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                        for task in (reader, waiter):
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError,
                                                     asyncio.TimeoutError):
                                await task
                except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                    self._index = (self._index + 1) % len(self.urls)
                self.open = False
                if not stop.is_set():
                    self.reconnects += 1
                    await asyncio.sleep(0.1)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        async for event in read_events(resp):
            frame = event.json()
            self.frames.append(frame)
            if event.id is not None:  # a stream event: its id is the stream sequence (the resume cursor)
                self.last_id = event.id
                self.seqs.append(int(event.id))
                frame.setdefault("seq", int(event.id))


async def connect_cluster(url: str, **options: Any) -> Any:
    """A NATS connection to every node of a credentialed URL list; the credentials are passed as options so
    that nodes the cluster gossips (which come without them) accept the reconnect too."""
    parts = [urlsplit(one.strip()) for one in url.split(",")]
    servers = [urlunsplit(p._replace(netloc=p.netloc.rsplit("@", 1)[-1])) for p in parts]
    return await nats.connect(servers, user=unquote(parts[0].username or ""), password=unquote(parts[0].password or ""),
                              **options)


@dataclass
class StreamObserver:
    """Core subscriptions on the experience's live subject, one through each node (a node that is cut off
    or paused must not blind the observer): when each stream sequence was first seen on any of them."""

    nats_url: str
    seen: dict[int, float] = field(default_factory=dict)
    updates: set[int] = field(default_factory=set)  # the world_updates among them (every chain gets those)
    last_seq: int = 0
    _conns: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        urls = self.nats_url.split(",")
        for i in range(len(urls)):
            rotated = ",".join(urls[i:] + urls[:i])  # each connection starts on another node
            nc = await connect_cluster(rotated, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                                       dont_randomize=True)
            await nc.subscribe("live." + experience_updates(EXPERIENCE), cb=self._on)
            self._conns.append(nc)

    async def _on(self, msg: Any) -> None:
        seq = int(msg.headers.get("Nats-Sequence", 0)) if msg.headers else 0
        if seq and seq not in self.seen:
            self.seen[seq] = time.monotonic()
            self.last_seq = max(self.last_seq, seq)
            if orjson.loads(msg.data).get("type") == "world_update":
                self.updates.add(seq)

    async def stop(self) -> None:
        for nc in self._conns:
            with contextlib.suppress(Exception):
                await nc.close()

    def published_at(self, seq: int) -> float | None:
        """When seq (or the nearest sequence seen after it, for one the observer missed) went live."""
        if seq in self.seen:
            return self.seen[seq]
        later = [s for s in self.seen if s > seq]
        return self.seen[min(later)] if later else None
