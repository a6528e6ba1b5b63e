"""Full garbage collections paced by heap growth and time, not by CPython's promotion count alone.

CPython collects its oldest generation whenever the objects promoted into it since the last full
collection reach a quarter of it. A gateway growing to 10,000 sessions (each holding many tracked
objects) walks its whole heap again every 25% of growth. The pacer
keeps CPython's quarter but takes it at most every `MIN_GAP_S` (a storm of connects is walked a few
times, not once per quarter), collects at once when the heap has doubled (it never runs away), and
collects a heap that grew at all within `GAIA_GC_FULL_EVERY_S` (30 s), so the garbage of players
who left is gone soon after they are (the soak's leak check holds the gateway to that).

The young generations are left to CPython: they are small and most garbage dies there. What
exists when the service starts (modules, classes, functions) is frozen out of every collection.
Only the services' `main()` installs this: it is process-wide, and tests build apps in one process.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from typing import AsyncIterator, Callable

from aiohttp import web

log = logging.getLogger(__name__)
NEVER = 1_000_000_000  # a gen2 threshold CPython never reaches: full collections are ours to start
GROWTH = 1.25  # CPython's own quarter...
MIN_GAP_S = 5.0  # ...taken at most this often
HARD_GROWTH = 2.0  # whatever the pace: a heap that doubled is collected at once
QUIET_GROWTH = 1.05  # a heap grown this much is collected within every_s
SLOW_S = 0.1


class GcPacer:
    """Starts a full collection when the heap grew enough for the time since the last one."""

    def __init__(self, every_s: float = 30.0, check_s: float = 0.5) -> None:
        self.every_s = every_s
        self.check_s = check_s
        self.collections = 0
        self.seconds = 0.0
        self._after_last = 0
        self._last_at = 0.0

    def install(self) -> None:
        """Freeze what startup made, and take full collections away from CPython's own trigger."""
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)
        self._after_last, self._last_at = sys.getallocatedblocks(), time.monotonic()

    def due(self) -> bool:
        """True when allocated blocks doubled, grew by a quarter `MIN_GAP_S` after the last full
        collection, or grew at all (5%) `every_s` after it."""
        blocks, since = sys.getallocatedblocks(), time.monotonic() - self._last_at
        after = self._after_last
        return (blocks >= HARD_GROWTH * after or (blocks >= GROWTH * after and since >= MIN_GAP_S)
                or (blocks >= QUIET_GROWTH * after and since >= self.every_s))

    def collect(self) -> None:
        """One full collection, timed (a slow one is logged: it is a pause for every client)."""
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        self.collections += 1
        self.seconds += took
        self._after_last, self._last_at = sys.getallocatedblocks(), time.monotonic()
        (log.info if took >= SLOW_S else log.debug)(
            "full garbage collection: %.3f s, %d unreachable, %d blocks left", took, found, self._after_last)

    async def run(self) -> None:
        """Check every `check_s` and collect when due."""
        while True:
            await asyncio.sleep(self.check_s)
            if self.due():
                self.collect()


def gc_pacer_ctx(every_s: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry (added by a service's main) that installs and runs a GcPacer."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pacer = GcPacer(every_s=every_s)
        pacer.install()
        task = asyncio.create_task(pacer.run(), name="gc-pacer")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx
