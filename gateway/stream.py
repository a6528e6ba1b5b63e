"""A session's one subscription: a JetStream consumer on its experience and user subjects, live and replay alike.

Each stream owns a core subscription on its own deliver subject plus an ephemeral, ack-less push
consumer filtered on `world.updates.exp.{experience}` (one broadcast per commit, each player's copy
made here) and `world.updates.user.{id}` (events addressed to this user only), started at
`cursor + 1`. The stream sequence of each message is the client's `seq`. A consumer-sequence gap, a missed heartbeat or a NATS
reconnect recreates the consumer from the cursor, and anything at or below the cursor is dropped,
so delivery is gap-free and duplicate-free without a second code path for replay.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from marshmallow import ValidationError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from shared.config import Settings
from gateway.validation import EventValidator
from shared.natsconn import NatsLink
from shared.subjects import experience_updates, user_updates
from shared.tasks import raise_if_cancelled

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    """What a stream tells its owner (a WebSocket session or an SSE stream)."""

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None: ...

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None: ...

    def on_cursor_lost(self) -> None: ...


@dataclass(frozen=True)
class OpenResult:
    """How a stream started: `live`, `replay` (up to a target sequence), `too_old` or `offline`."""

    kind: str
    cursor: int | None = None
    replay_until: int = 0


def ack_sequences(reply: str) -> tuple[int, int]:
    """(stream sequence, consumer sequence) from a JetStream delivery's reply subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the newer form with
    domain and account hash before the stream name and a random token at the end. Read directly:
    nats-py's `msg.metadata` builds three objects per message, a tenth of the gateway's time under fan-out.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6])
    return int(tokens[7]), int(tokens[8])


def with_seq(seq: int, payload: bytes) -> bytes:
    """Add `seq` to an encoded JSON object without re-encoding it."""
    return b'{"seq":%d,%s' % (seq, payload[1:])


@dataclass
class StreamStats:
    """Events handed to sessions (by transport) and events dropped as invalid, over the process's life."""

    delivered: Counter[str] = field(default_factory=Counter)
    invalid: int = 0


class UserStream:
    """One user's event stream for one experience, resumable from any stream sequence."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = (
        "link", "settings", "user_id", "experience", "subject", "experience_subject", "label", "sink",
        "validator", "stats", "transport", "cursor", "last_activity", "_sub", "_consumer", "_deliver",
        "_generation", "_next_cseq", "_replay", "_closed", "_lock",
    )

    def __init__(self, link: NatsLink, settings: Settings, user_id: str, experience: str, label: str,
                 sink: StreamSink, validator: EventValidator, stats: StreamStats | None = None) -> None:
        self.link = link
        self.settings = settings
        self.user_id = user_id
        self.experience = experience
        self.subject = user_updates(user_id)
        self.experience_subject = experience_updates(experience)
        self.label = label
        self.sink = sink
        self.validator = validator
        self.stats = stats or StreamStats()
        self.transport = getattr(sink, "transport", "other")
        self.cursor: int | None = None
        self.last_activity = time.monotonic()
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._deliver: str = ""
        self._generation = 0
        self._next_cseq = 1
        self._replay: tuple[int, int, int] | None = None  # (from_seq, until_seq, replayed so far)
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        """True while a consumer is (believed to be) feeding this stream."""
        return self._sub is not None

    async def open(self, after_seq: int | None) -> OpenResult:
        """Start at the stream's end (after_seq None) or right after a client's cursor.

        On a resume the replay target is the subject's last sequence, read before the consumer
        exists, so the hand-over from replay to live is exact however fast messages arrive.
        The sink hears `on_replayed` once the target is reached (at once if nothing was missed).
        """
        async with self._lock:
            js = self.link.js
            if not self.link.jetstream_ok or js is None:
                return OpenResult("offline")
            if after_seq is None:
                return OpenResult("live", await self._subscribe_at_end())
            state = (await js.stream_info(self.settings.stream_name)).state
            if after_seq + 1 < state.first_seq or after_seq > state.last_seq:
                return OpenResult("too_old", await self._subscribe_at_end())
            until = await self._last_seq_of_subject()
            self.cursor = after_seq
            if until > after_seq:
                self._replay = (after_seq + 1, until, 0)
            await self._subscribe(after_seq + 1)
            if until <= after_seq:
                self.sink.on_replayed(after_seq + 1, after_seq, 0)
            return OpenResult("replay", after_seq, until)

    async def _subscribe_at_end(self) -> int:
        """Subscribe for new messages only; the cursor becomes the stream's last sequence."""
        info = await self._subscribe(None)
        self.cursor = info.delivered.stream_seq if info.delivered else 0
        return self.cursor

    async def _last_seq_of_subject(self) -> int:
        """Stream sequence of the newest message on the experience's or this user's subject (0 if none)."""
        assert self.link.js is not None
        last = 0
        for subject in (self.experience_subject, self.subject):
            try:
                msg = await self.link.js.get_last_msg(self.settings.stream_name, subject, direct=True)
            except NotFoundError:
                continue
            last = max(last, msg.seq or 0)
        return last

    async def reopen(self) -> None:
        """Recreate the consumer from the cursor (after a reconnect, gap or silence)."""
        async with self._lock:
            if self._closed or not self.link.jetstream_ok:
                return
            if self.cursor is None:
                await self._subscribe_at_end()
                self.sink.on_cursor_lost()
                return
            await self._subscribe(self.cursor + 1)
            log.info("[%s] stream resumed from seq %d", self.label, self.cursor + 1)

    async def _subscribe(self, start_seq: int | None) -> js_api.ConsumerInfo:
        """Swap in a fresh deliver subscription and consumer (new subject, so stale messages die)."""
        nc, js = self.link.nc, self.link.js
        assert nc is not None and js is not None
        await self._drop_subscription()
        self._generation += 1
        self._deliver = f"gaia.session.{self.user_id}.{self.label}.{self._generation}"
        self._next_cseq = 1
        generation = self._generation

        async def on_msg(msg: Msg) -> None:
            if generation == self._generation:  # messages still queued for a replaced consumer die here
                self._on_msg(msg)

        self._sub = await nc.subscribe(self._deliver, cb=on_msg,
                                       pending_msgs_limit=self.settings.sub_pending_msgs,
                                       pending_bytes_limit=self.settings.sub_pending_bytes)
        config = js_api.ConsumerConfig(
            deliver_subject=self._deliver,
            filter_subjects=[self.experience_subject, self.subject],
            deliver_policy=js_api.DeliverPolicy.NEW if start_seq is None else js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_policy=js_api.AckPolicy.NONE,
            idle_heartbeat=self.settings.stream_heartbeat_s,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=max(30.0, 3 * self.settings.stream_heartbeat_s),
        )
        try:
            info = await js.add_consumer(self.settings.stream_name, config)
        except BaseException:
            await self._drop_subscription()
            raise
        self._consumer = info.name
        self.last_activity = time.monotonic()
        return info

    async def _drop_subscription(self) -> None:
        """Unsubscribe and delete the consumer now (the server would only after its inactive threshold,
        and each stream admits a limited number of consumers: GAIA_STREAM_MAX_CONSUMERS)."""
        sub, self._sub = self._sub, None
        consumer, self._consumer = self._consumer, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
        if consumer is not None and self.link.js is not None and self.link.connected:
            try:
                await asyncio.wait_for(self.link.js.delete_consumer(self.settings.stream_name, consumer), 2.0)
            except Exception:  # noqa: BLE001 - gone already, or NATS away: the inactive threshold removes it
                raise_if_cancelled()

    async def close(self) -> None:
        """Stop for good: no subscription and no consumer left behind."""
        self._closed = True
        async with self._lock:
            await self._drop_subscription()

    def schedule_reopen(self) -> None:
        """Recreate the consumer soon, outside the NATS callback."""
        if not self._closed:
            asyncio.get_running_loop().create_task(self.reopen_quietly())

    async def reopen_quietly(self) -> None:
        try:
            await self.reopen()
        except Exception as exc:  # noqa: BLE001 - the stream sweeper will try again
            raise_if_cancelled()
            log.warning("[%s] stream reopen failed: %s", self.label, type(exc).__name__)
            self._sub = None

    def _on_msg(self, msg: Msg) -> None:
        """Handle one delivery: heartbeats, gaps, duplicates, then validate and hand over."""
        self.last_activity = time.monotonic()
        if not msg.reply:
            self._on_status(msg)
            return
        seq, cseq = ack_sequences(msg.reply)
        if cseq != self._next_cseq:
            log.info("[%s] consumer gap (got %d, want %d): recreating", self.label, cseq, self._next_cseq)
            self._generation += 1
            self.schedule_reopen()
            return
        self._next_cseq += 1
        if self.cursor is not None and seq <= self.cursor:
            return
        self.cursor = seq
        forwarded = self._forward(seq, msg.subject, msg.data)
        if self._replay is not None:
            self._count_replay(seq, forwarded)

    def _on_status(self, msg: Msg) -> None:
        """Idle heartbeats say which consumer sequence the server last sent: a lost tail shows here."""
        headers = msg.headers or {}
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) >= self._next_cseq:
            log.info("[%s] heartbeat shows missed messages: recreating", self.label)
            self._generation += 1
            self.schedule_reopen()

    def _forward(self, seq: int, subject: str, payload: bytes) -> bool:
        """Validate and pass on this player's copy; anything else only moves the cursor."""
        try:
            if subject == self.experience_subject:
                broadcast = self.validator.broadcast(payload)
                frame, event = broadcast.frame_for(seq, self.user_id), broadcast.event
                if frame is None:
                    return False
            else:
                event = self.validator.check(payload, self.user_id)
                if event["experience"] != self.experience:
                    return False
                frame = with_seq(seq, payload)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.error("[%s] dropped invalid event seq=%d: %s", self.label, seq, exc)
            self.stats.invalid += 1
            return False
        self.stats.delivered[self.transport] += 1
        self.sink.on_event(seq, frame, event)
        return True

    def _count_replay(self, seq: int, forwarded: bool) -> None:
        assert self._replay is not None
        start, until, replayed = self._replay
        replayed += int(forwarded)
        if seq < until:
            self._replay = (start, until, replayed)
            return
        self._replay = None
        self.sink.on_replayed(start, seq, replayed)


class StreamSet:
    """Every open stream of this gateway: reopened together after a reconnect, swept for silence."""

    def __init__(self, link: NatsLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.streams: set[UserStream] = set()
        self.validator = EventValidator()
        self.stats = StreamStats()
        link.on_connect(self.reopen_all)

    def add(self, stream: UserStream) -> None:
        self.streams.add(stream)

    def discard(self, stream: UserStream) -> None:
        self.streams.discard(stream)

    async def reopen_all(self) -> None:
        """After NATS (re)connects: every stream continues from its cursor."""
        if self.streams:
            log.info("reopening %d streams after nats connect", len(self.streams))
        await asyncio.gather(*(s.reopen_quietly() for s in list(self.streams)))

    async def sweep_forever(self) -> None:
        """Reopen streams whose consumer fell silent past three heartbeats, or never started."""
        limit = 3 * self.settings.stream_heartbeat_s
        while True:
            await asyncio.sleep(self.settings.stream_heartbeat_s)
            if not self.link.jetstream_ok:
                continue
            now = time.monotonic()
            stale = [s for s in self.streams if not s.active or now - s.last_activity > limit]
            for stream in stale:
                await stream.reopen_quietly()
