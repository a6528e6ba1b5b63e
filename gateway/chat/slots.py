"""Model requests at once over every gateway worker of this host, and the queue in front of them.

`GAIA_NARRATOR_MAX_INFLIGHT` is what the model endpoint serves at once (1 for llama.cpp's server on a
small machine, tens for a hosted API) and `GAIA_NARRATOR_MAX_PER_USER` a user's share of it. Both
count over the workers of one host: the supervisor (gateway/workers.py) gives its workers one small
shared file, a row of counters per worker (its requests in all, and per hashed user), and a worker
takes a slot under an exclusive lock (flock) after summing the rows. A worker started again zeroes
its own row, so the slots of a dead worker come back with it. Without a supervisor the counters are
the process's own (an anonymous map).

A request that finds every slot taken waits in this process's queue (visible as
gaia_gateway_narrator_requests_queued), for at most the time its first-token deadline still allows
after the model's usual time to first token; past that it is `model_busy` instead of a timeout
later. When the requests already waiting here would hold the slots past that time (their number
times the usual time a request holds a slot), it is `model_busy` at once: kb's message now rather
than the same message seconds later. A user already at their share is `model_busy` without waiting.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import time
import zlib
from typing import Iterator

from gateway.chat.narratormetrics import NarratorMetrics

BUCKETS = 1024  # users hash to this many counters: two users in one bucket share a per-user cap
ROW = 1 + BUCKETS  # the worker's requests in all, then per bucket
POLL_S = 0.05  # a waiting request looks again this often (a slot freed by another worker wakes nobody here)
EWMA = 0.2  # weight of the newest first-token time in the estimate


class HostSlots:
    """Counters of model requests in flight: this worker's row in a file shared by the host's workers."""

    def __init__(self, limit: int, per_user: int, path: str | None = None, workers: int = 1, index: int = 0) -> None:
        self.limit = max(1, limit)
        self.per_user = max(1, per_user)
        self.rows = max(1, workers)
        self.index = index if 0 <= index < self.rows else 0
        size = self.rows * ROW * 4
        self._fd = -1
        if path:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
        else:
            self._map = mmap.mmap(-1, size)
        self._counts = memoryview(self._map).cast("i")
        with self._locked():
            mine = self.index * ROW
            self._counts[mine:mine + ROW] = memoryview(bytes(ROW * 4)).cast("i")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._fd < 0:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    @staticmethod
    def _bucket(user_id: str) -> int:
        return 1 + zlib.crc32(user_id.encode()) % BUCKETS

    def _sum(self, column: int) -> int:
        return sum(self._counts[row * ROW + column] for row in range(self.rows))

    def take(self, user_id: str) -> str | None:
        """Take a slot: None when taken, else "user" (their share is in use) or "host" (every slot is)."""
        bucket = self._bucket(user_id)
        with self._locked():
            if self._sum(bucket) >= self.per_user:
                return "user"
            if self._sum(0) >= self.limit:
                return "host"
            mine = self.index * ROW
            self._counts[mine] += 1
            self._counts[mine + bucket] += 1
        return None

    def give_back(self, user_id: str) -> None:
        mine, bucket = self.index * ROW, self._bucket(user_id)
        with self._locked():
            self._counts[mine] = max(0, self._counts[mine] - 1)
            self._counts[mine + bucket] = max(0, self._counts[mine + bucket] - 1)

    def in_flight(self) -> int:
        """Requests in flight over every worker of the host."""
        with self._locked():
            return self._sum(0)

    def mine(self) -> int:
        """This worker's requests in flight."""
        return int(self._counts[self.index * ROW])

    def close(self) -> None:
        self._counts.release()
        self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ModelQueue:
    """Slots taken in arrival order by this process's requests, each waiting no longer than it can afford."""

    def __init__(self, slots: HostSlots, metrics: NarratorMetrics | None = None) -> None:
        self.slots = slots
        self.metrics = metrics
        self.first_token_s = 0.5  # the model's usual time to first token (an estimate, updated by `observed`)
        self.hold_s = 1.0  # the usual time a request holds its slot (an estimate, updated by `release`)
        self.waiting = 0
        self._freed = asyncio.Event()
        self._taken: dict[str, list[float]] = {}

    def observed(self, first_token_s: float) -> None:
        """A request's time to first token, for the estimate of what a slot taken late can still deliver."""
        self.first_token_s += EWMA * (first_token_s - self.first_token_s)

    async def acquire(self, user_id: str, deadline: float) -> str | None:
        """Wait for a slot until the model could no longer answer before `deadline` (perf_counter time).

        None: the slot is taken (give it back with `release`); "user" or "host": none for this request.
        """
        started = time.perf_counter()
        blocked = self.slots.take(user_id)
        if blocked != "host":
            return self._held(user_id, blocked)
        ahead = (self.waiting + 1) * self.hold_s / self.slots.limit
        if started + ahead > deadline - self.first_token_s:  # it would wait past its deadline: say so now
            if self.metrics:
                self.metrics.queue_seconds.observe(0.0)
            return blocked
        self.waiting += 1
        if self.metrics:
            self.metrics.queued.inc()
        try:
            while blocked == "host":
                left = deadline - self.first_token_s - time.perf_counter()
                if left <= 0:
                    return blocked
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(POLL_S, left)):
                        await self._freed.wait()
                blocked = self.slots.take(user_id)
            return self._held(user_id, blocked)
        finally:
            self.waiting -= 1
            if self.metrics:
                self.metrics.queued.dec()
                self.metrics.queue_seconds.observe(time.perf_counter() - started)

    def _held(self, user_id: str, blocked: str | None) -> str | None:
        if blocked is None:
            self._taken.setdefault(user_id, []).append(time.perf_counter())
        return blocked

    def release(self, user_id: str) -> None:
        taken = self._taken.get(user_id)
        if taken:
            self.hold_s += EWMA * (time.perf_counter() - taken.pop(0) - self.hold_s)
            if not taken:
                del self._taken[user_id]
        self.slots.give_back(user_id)
        self._freed.set()
