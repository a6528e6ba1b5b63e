"""The world clock: ticks every experience, in exactly one kb process (a JetStream KV lease)."""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Callable

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from kb.worldservice import WorldService
from shared.natsconn import NatsLink, lease_bucket
from shared.service.tasks import raise_if_cancelled
from shared.subjects import CLOCK_LEASE_BUCKET

log = logging.getLogger(__name__)
LEASE_KEY = "world-clock"


class ClockLease:
    """Holds the `world-clock` key of a KV bucket whose entries expire after `ttl_s`.

    Whoever created the key owns the clock while it keeps updating it (compare-and-set on the
    revision). A crashed owner stops updating; its entry expires and another kb can create it.
    """

    def __init__(self, link: NatsLink, ttl_s: float) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.owner = uuid.uuid4().hex
        self.revision: int | None = None
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            assert self.link.js is not None
            replicas = self.link.settings.stream_replicas
            self._kv = await lease_bucket(self.link.js, CLOCK_LEASE_BUCKET, self.ttl_s, replicas)
        return self._kv

    async def hold(self) -> bool:
        """Acquire or renew the lease; False if another process holds it or NATS is away."""
        if not self.link.jetstream_ok:
            self.revision = None
            return False
        try:
            kv = await self._bucket()
            if self.revision is None:
                self.revision = await kv.create(LEASE_KEY, self.owner.encode())
                log.info("world clock lease acquired by %s", self.owner[:8])
            else:
                self.revision = await kv.update(LEASE_KEY, self.owner.encode(), last=self.revision)
            return True
        except KeyWrongLastSequenceError:
            self.revision = None
            return False
        except Exception as exc:  # noqa: BLE001 - no lease this round; try next tick
            raise_if_cancelled()
            log.debug("clock lease unavailable: %s", type(exc).__name__)
            self.revision = None
            self._kv = None
            return False


async def run_clock(worlds: dict[str, WorldService], lease: ClockLease | None, tick_s: float,
                    owns: Callable[[str], bool]) -> None:
    """Every tick_s: advance every world this process owns by one tick.

    With one kb owning every world, the clock lease keeps a second such process from ticking
    too; with per-world leases (lease mode) each world's owner ticks it, so no clock lease is needed.
    """
    while True:
        await asyncio.sleep(tick_s)
        if lease is not None and not await lease.hold():
            continue
        for world in [w for e, w in worlds.items() if owns(e)]:
            try:
                await world.tick()
            except Exception:  # noqa: BLE001 - one bad tick must not stop the clock
                raise_if_cancelled()
                log.exception("world tick failed for %s", world.experience)
