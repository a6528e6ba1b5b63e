"""Full garbage collections paced by heap growth (doubling, as Go's GOGC=100), not CPython's default.

CPython collects its oldest generation whenever the objects promoted into it since the last full
collection reach a quarter of it. A gateway growing to 10,000 sessions (about 160 tracked objects
each) walks its whole heap again every 25% of growth: measured here, 17 full collections of up to
1.4 s each, 9.5 s of CPU out of 14 while connecting 10,000 players and letting them go. Paced by
doubling, the same growth costs about a third of that, and a steady heap (players coming and going
at the same rate) is walked only when its garbage has grown as large as what is alive, or at the
latest every `GAIA_GC_FULL_EVERY_S`.

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
FLOOR_BLOCKS = 500_000  # below this many allocated blocks a full collection is cheap anyway
SLOW_S = 0.1


class GcPacer:
    """Starts a full collection when allocated blocks doubled since the last one, or after `every_s`."""

    def __init__(self, growth: float = 2.0, every_s: float = 300.0, check_s: float = 0.5) -> None:
        self.growth = growth
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
        """True when the heap has grown by `growth` since the last full collection, or it is old."""
        blocks = sys.getallocatedblocks()
        if blocks >= max(FLOOR_BLOCKS, self._after_last * self.growth):
            return True
        return time.monotonic() - self._last_at >= self.every_s and blocks > self._after_last

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
