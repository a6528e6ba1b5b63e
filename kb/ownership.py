"""Which worlds this kb process may write: all of them, or those whose JetStream KV lease it holds."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from shared.natsconn import NatsLink, lease_bucket
from shared.service.tasks import raise_if_cancelled
from shared.subjects import OWNER_BUCKET

log = logging.getLogger(__name__)
Acquired = Callable[[str], Awaitable[None]]


class WorldOwnership:
    """`single` mode owns every world; `lease` mode owns a world while it keeps its KV key alive.

    A lease is a key in a KV bucket whose entries expire after `ttl_s`, created by the first kb
    to ask and renewed by compare-and-set on its revision. Its value is the owner's URL, so the
    others can forward requests for that world. The owner counts its lease as valid for `ttl_s`
    after the last successful renewal, and `grace_s` longer while the store gives no answer at all
    (no leader to take the lease from us through); the store's version check fences any write a
    paused or cut-off former owner still attempts.
    """

    def __init__(self, link: NatsLink | None, experiences: list[str], my_url: str, ttl_s: float,
                 on_acquire: Acquired, grace_s: float = 0.0) -> None:
        self.link = link
        self.experiences = experiences
        self.my_url = my_url
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.on_acquire = on_acquire
        self._revisions: dict[str, int] = {}
        self._valid_until: dict[str, float] = {}
        self._unanswered: set[str] = set()  # owned worlds whose last renewal got no answer
        self._owners: dict[str, str] = {}  # the owner each world last had, for lookups the store cannot answer
        self._kv: KeyValue | None = None

    @property
    def leased(self) -> bool:
        return self.link is not None

    def owns(self, experience: str) -> bool:
        """May this process write the world now?"""
        if not self.leased:
            return True
        grace = self.grace_s if experience in self._unanswered else 0.0
        return time.monotonic() < self._valid_until.get(experience, 0.0) + grace

    def owned(self) -> list[str]:
        return [e for e in self.experiences if self.owns(e)]

    async def owner_url(self, experience: str) -> str | None:
        """The URL of the kb holding the world's lease, or None while nobody does. While the store gives no
        answer (its leader being elected: a read may go to the old one) the owner it last named: an owner
        that cannot renew either keeps writing for a while (`grace_s`)."""
        try:
            entry = await (await self._bucket()).get(experience)
        except (KeyNotFoundError, NotFoundError):
            self._owners.pop(experience, None)
            return None
        except Exception as exc:  # noqa: BLE001 - NATS away: the last owner we knew of, if any
            raise_if_cancelled()
            log.debug("owner lookup failed: %s", type(exc).__name__)
            return self._owners.get(experience)
        url = entry.value.decode() if entry.value else None
        if url:
            self._owners[experience] = url
        return url

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            assert self.link is not None and self.link.nc is not None
            # Requests patient for a third of the lease, not the link's 5 s: one sent while the bucket had
            # no leader is never answered, and waiting it out held back the first request to its next leader.
            js = self.link.nc.jetstream(timeout=max(self.ttl_s / 3, 0.5))
            self._kv = await lease_bucket(js, OWNER_BUCKET, self.ttl_s, self.link.settings.stream_replicas)
        return self._kv

    async def hold_all(self) -> None:
        """Renew what we own; try to take every world nobody owns."""
        assert self.link is not None
        if not self.link.connected:  # not the stream's health: the bucket has a leader of its own
            return
        for experience in self.experiences:
            await self._hold(experience)

    async def _hold(self, experience: str) -> None:
        started = time.monotonic()
        try:
            kv = await self._bucket()
            revision = self._revisions.get(experience) if self.owns(experience) else None
            if revision is not None:
                try:
                    revision = await kv.update(experience, self.my_url.encode(), last=revision)
                except KeyWrongLastSequenceError:  # taken, or expired while its store had no leader:
                    revision = None  # take it again at once if nobody holds it, still owning meanwhile
            if revision is None:
                revision = await kv.create(experience, self.my_url.encode())
                await self.on_acquire(experience)
                log.info("took ownership of %s", experience)
        except KeyWrongLastSequenceError:
            self._lose(experience, "another kb holds it")
            return
        except Exception as exc:  # noqa: BLE001 - no answer this round: the lease runs out by itself
            raise_if_cancelled()
            log.debug("lease on %s not renewed: %s", experience, type(exc).__name__)
            if not isinstance(exc, asyncio.TimeoutError):  # kept through an election: opening asks its leader
                self._kv = None
            if experience in self._revisions:
                self._unanswered.add(experience)
            return
        self._revisions[experience] = revision
        self._valid_until[experience] = started + self.ttl_s
        self._unanswered.discard(experience)

    def _lose(self, experience: str, why: str) -> None:
        if self._revisions.pop(experience, None) is not None:
            log.warning("lost ownership of %s (%s)", experience, why)
        self._valid_until.pop(experience, None)
        self._unanswered.discard(experience)

    async def run(self) -> None:
        """Forever, a third of the lease time apart: renew and take leases."""
        if not self.leased:
            return
        while True:
            try:
                await self.hold_all()
            except Exception:  # noqa: BLE001 - keep trying; a lease simply runs out meanwhile
                raise_if_cancelled()
                log.exception("lease round failed")
            await asyncio.sleep(self.ttl_s / 3)

    async def release(self) -> None:
        """On shutdown: hand every world back at once instead of making the others wait out the TTL."""
        if not self.leased or self._kv is None:
            return
        for experience, revision in list(self._revisions.items()):
            try:
                await asyncio.wait_for(self._kv.delete(experience, last=revision), timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - it expires anyway
                log.debug("release of %s failed: %s", experience, type(exc).__name__)
            self._lose(experience, "shutting down")
