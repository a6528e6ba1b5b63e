"""Every open stream of a gateway process: opened, checked after a NATS reconnect and swept together."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from gateway.streams.reads import StreamReads
from gateway.streams.sink import StreamSink
from gateway.streams.stream import ConnectionStream
from shared.config import Settings
from shared.natsconn import NatsLink
from shared.service.tasks import raise_if_cancelled

log = logging.getLogger(__name__)


class StreamSet:
    """Every open stream of this gateway: checked together after a reconnect and by a periodic sweep."""

    def __init__(self, link: NatsLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.reads = StreamReads(link, settings)
        self.stats = self.reads.stats
        self.streams: set[ConnectionStream] = set()
        # Set when the gateway stops: its connection is closed, not drained, so each subscription ends
        # with it, not with an UNSUB of its own (10,000 of those were a tenth of a stop's CPU).
        self.stopping = False
        self._swept_last: dict[str, int] = {}
        link.on_connect(self.check_all)

    def new(self, user_id: str, experience: str, label: str, sink: StreamSink) -> ConnectionStream:
        """A stream for one client (not yet open), registered for reconnect checks."""
        stream = ConnectionStream(self.reads, user_id, experience, label, sink)
        self.streams.add(stream)
        return stream

    async def discard(self, stream: ConnectionStream) -> None:
        """Close a stream and forget it (its subscription left to the connection's close when stopping)."""
        self.streams.discard(stream)
        await stream.close(unsubscribe=not self.stopping)

    async def check_all(self) -> None:
        """After NATS (re)connects: streams behind their subject catch up, oldest cursor first, bounded."""
        streams = sorted(self.streams, key=lambda s: s.cursor if s.cursor is not None else -1)
        if streams:
            log.info("checking %d streams after nats connect", len(streams))
        lasts = await self._subject_lasts({s.subject for s in streams})
        for stream in streams:
            try:
                if stream.needs_open:
                    await stream.ensure_open()
                elif stream.subject in lasts:
                    stream.check(lasts[stream.subject])
            except Exception as exc:  # noqa: BLE001 - the sweeper tries again
                raise_if_cancelled()
                log.warning("[%s] stream check failed: %s", stream.label, type(exc).__name__)

    async def _subject_lasts(self, subjects: set[str]) -> dict[str, int]:
        """One direct get per experience, however many sessions watch it."""
        lasts: dict[str, int] = {}
        for subject in subjects:
            try:
                lasts[subject] = await self.reads.subject_last(subject)
            except Exception as exc:  # noqa: BLE001 - skipped this round
                raise_if_cancelled()
                log.warning("last sequence of %s unknown: %s", subject, type(exc).__name__)
        return lasts

    async def sweep_forever(self) -> None:
        """Catch a lost tail: a stream still below what its subject held one sweep ago missed something.

        A gap shows on the next live message; this finds the gap no later message reveals (the last
        message of a quiet world dropped on a reconnect or a slow-consumer cut).
        """
        while True:
            await asyncio.sleep(self.settings.stream_sweep_s)
            if not self.link.jetstream_ok:
                continue
            try:
                await self._sweep_once()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                raise_if_cancelled()
                log.exception("stream sweep failed; going on")

    async def _sweep_once(self) -> None:
        before, self._swept_last = self._swept_last, await self._subject_lasts(
            {s.subject for s in self.streams})
        by_subject: dict[str, list[ConnectionStream]] = defaultdict(list)
        for stream in self.streams:
            by_subject[stream.subject].append(stream)
        for subject, streams in by_subject.items():
            for stream in streams:
                if stream.needs_open:
                    await self._quietly(stream.ensure_open())
                elif subject in before:
                    stream.check(before[subject])

    async def _quietly(self, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - tried again next sweep
            raise_if_cancelled()
            log.warning("stream reopen failed: %s", type(exc).__name__)

    @property
    def catching_up(self) -> int:
        """Streams replaying through a consumer right now (for /metrics)."""
        return sum(1 for s in self.streams if s.catching_up)
