"""A connection's one subscription: a core NATS subscription on its experience's live subject.

The WORLD_UPDATES stream republishes every stored message from `world.updates.>` to
`live.world.updates.>` with two headers: `Nats-Sequence` (the stream sequence, the client's `seq`)
and `Nats-Last-Sequence` (the previous sequence on the same subject). A session holds exactly one
core subscription on `live.world.updates.exp.{experience}` for its whole life, so a live session
costs nats-server one subscription and no JetStream state. A gap is exact: a message whose
`Nats-Last-Sequence` is not this session's cursor means something between was missed.

Catching up (a resume with a cursor, a detected gap, a NATS reconnect) reads the stream from
the cursor by batched direct gets, paced by the owner's socket (streams/reads.py), and goes live
once the replay meets the live messages held meanwhile; a short-lived pull consumer serves only a
replay longer than `GAIA_CATCHUP_DIRECT_MAX`, a cursor of 0, or one the stream may no longer hold.
A client too far behind gets a fresh snapshot instead of a flood (the sink's `on_resync`).
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.streams.directget import StoredMsg
from gateway.streams.frames import InvalidBroadcast
from gateway.streams.headers import ack_sequences, delivery_problem
from gateway.streams.natssub import subscribe_direct
from gateway.streams.reads import StreamReads
from gateway.streams.sink import OpenResult, StreamSink
from shared.service.tasks import raise_if_cancelled
from shared.subjects import experience_updates, live_subject

log = logging.getLogger(__name__)
CATCHUP_BATCH = 256
ROOM_POLL_S = 0.01
REPLICA_WAIT_S = 0.02


class ConnectionStream:
    """One connection's event stream for one experience (a socket, an SSE stream, a chat request),
    resumable from any stream sequence."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("reads", "user_id", "user_json", "experience", "subject", "label", "sink", "transport", "cursor",
                 "_sub", "_held", "_held_dropped", "_catchup", "_replay", "_closed", "_rewinds")

    def __init__(self, reads: StreamReads, user_id: str, experience: str, label: str, sink: StreamSink) -> None:
        self.reads = reads
        self.user_id = user_id
        self.user_json = orjson.dumps(user_id)
        self.experience = experience
        self.subject = experience_updates(experience)
        self.label = label
        self.sink = sink
        self.transport = sink.transport
        self.cursor: int | None = None
        self._sub: Subscription | None = None
        # Live messages held while the cursor is being set or caught up (None: live, pass them on).
        self._held: list[tuple[int, int, bytes]] | None = []
        self._held_dropped = False
        self._catchup: asyncio.Task[None] | None = None
        self._replay: tuple[int, int] | None = None  # a client's resume being served: (from_seq, replayed)
        self._closed = False
        self._rewinds = 0  # a delivery can make the sink rewind us: loops that deliver check this

    @property
    def catching_up(self) -> bool:
        return self._catchup is not None and not self._catchup.done()

    # ---- opening ----------------------------------------------------------------------------
    async def open(self, after_seq: int | None) -> OpenResult:
        """Subscribe, then start at the subject's end (after_seq None) or right after a client's cursor.

        The subscription exists before the subject's last sequence is read, so every later message
        reaches it; messages at or below the cursor are dropped, the rest must chain from it.
        """
        link = self.reads.link
        if not link.jetstream_ok or link.js is None:
            self._owe_resume(after_seq)
            return OpenResult("offline", after_seq)
        try:
            return await self._open(after_seq)
        except BaseException:
            await self._unsubscribe()  # so the sweeper opens it again from the client's cursor
            self._held = []
            self._owe_resume(after_seq)
            raise

    def _owe_resume(self, after_seq: int | None) -> None:
        """The stream could not open now: keep the client's cursor, and (a resume) owe it its `resumed`,
        which the sweeper's reopen sends once the catch-up from the cursor is done."""
        self.cursor = after_seq
        self._replay = None if after_seq is None else (after_seq + 1, 0)

    async def _open(self, after_seq: int | None) -> OpenResult:
        link = self.reads.link
        assert link.js is not None
        await self._subscribe()
        last = await self.reads.subject_last(self.subject)
        if after_seq is None:
            self._go_live_at(last)
            return OpenResult("live", last, last)
        if after_seq > last:  # the replica that answered may lag: the leader's word decides
            last = max(last, await self.reads.leader_last(self.subject))
        if after_seq > last:  # every cursor we hand out is a sequence of this subject
            self._resync("the cursor is ahead of the stream")
            self._go_live_at(last)
            return OpenResult("too_old", last, last)
        if after_seq == last:  # missed nothing
            self._go_live_at(last)
            self.sink.on_replayed(after_seq + 1, after_seq, 0)
            return OpenResult("replay", after_seq, last)
        self.cursor = after_seq
        self._replay = (after_seq + 1, 0)
        self._start_catch_up()
        return OpenResult("replay", after_seq, last)

    async def _subscribe(self) -> None:
        """The one core subscription (made once; nats-py restores it after a reconnect)."""
        if self._sub is not None:
            return
        nc = self.reads.link.nc
        assert nc is not None
        settings = self.reads.settings
        # No flush: the server handles one connection's operations in order, so the request that
        # reads the subject's end (sent after this SUB) sees a stream that already feeds us. In a
        # cluster the interest reaches other nodes a moment later; a message lost to that shows as a
        # gap on the next one, or to the sweeper, and is caught up.
        self._sub = await subscribe_direct(nc, live_subject(self.subject), self._on_live, settings.sub_pending_bytes)

    def _go_live_at(self, last: int) -> None:
        """The cursor is the subject's last sequence: pass on what was held after it, if it chains."""
        self.cursor = last
        if not self._splice():
            self._start_catch_up()

    # ---- live messages ------------------------------------------------------------------------
    def _on_live(self, msg: Msg) -> None:
        """A republished message: pass on, hold while catching up, or detect a gap (in nats-py's
        read loop: nothing here waits)."""
        if self._closed:
            return  # read before the server had our UNSUB (the stream was replaced by a resume)
        problem, seq, last = self.reads.live.of(msg, self.subject)
        if problem:  # an answer someone aimed at the live subject: never an event, never a cursor
            self.reads.foreign.drop("live", msg.subject, problem)
            return
        held = self._held
        if held is not None:
            if len(held) >= self.reads.settings.sub_pending_msgs:
                held.clear()  # they are in the stream: the catch-up reads them there
                self._held_dropped = True
            held.append((seq, last, msg.data))
            return
        cursor = self.cursor
        if cursor is not None and seq <= cursor:
            return
        if cursor is not None and last != cursor:
            log.info("[%s] gap before seq %d (previous %d, cursor %d): catching up", self.label, seq, last, cursor)
            self.reads.stats.gaps += 1
            self._held = [(seq, last, msg.data)]
            self._start_catch_up()
            return
        self._deliver(seq, msg.data)

    def _splice(self) -> bool:
        """Go live if the held messages chain from the cursor (True); otherwise hold anew (False)."""
        held, dropped = self._held or [], self._held_dropped
        self._held, self._held_dropped = None, False
        if dropped:
            self._held = []
            return False
        rewinds = self._rewinds
        for seq, last, data in held:
            if self.cursor is not None and seq <= self.cursor:
                continue
            if last != self.cursor:
                self._held = []  # still in the stream: the catch-up reads them in order
                return False
            self._deliver(seq, data)
            if self._rewinds != rewinds:
                return True  # the sink had us rewind: that catch-up reads on from its cursor
        self._finish_replay()
        return True

    def _deliver(self, seq: int, payload: bytes) -> None:
        """Move the cursor to `seq` and pass on this player's copy; an invalid event (counted, and
        logged once per process), or a copy with nothing for this player, only moves the cursor."""
        self.cursor = seq
        reads = self.reads
        try:
            broadcast = reads.validator.broadcast(seq, payload)
        except InvalidBroadcast:
            reads.stats.invalid += 1
            frame = None
        else:
            frame = broadcast.frame_for(self.user_id, self.user_json)
            if frame is not None:
                reads.stats.delivered[self.transport] += 1
                self.sink.on_event(seq, frame, broadcast.event)
        if self._replay is not None:
            start, replayed = self._replay
            self._replay = (start, replayed + (frame is not None))

    def _finish_replay(self) -> None:
        if self._replay is not None:
            start, replayed = self._replay
            self._replay = None
            self.sink.on_replayed(start, self.cursor or 0, replayed)

    def _resync(self, reason: str) -> None:
        self.reads.stats.resyncs += 1
        self._replay = None
        self.sink.on_resync(reason)

    # ---- catching up ----------------------------------------------------------------------------
    def _start_catch_up(self) -> None:
        if self._held is None:
            self._held = []
        if not self._closed and not self.catching_up:
            self._catchup = asyncio.get_running_loop().create_task(self._catch_up_until_done(),
                                                                   name=f"catchup-{self.label}")

    async def _catch_up_until_done(self) -> None:
        """Catch up; on NATS trouble wait and try again from the cursor (nothing is lost meanwhile)."""
        delay = 0.2
        while not self._closed:
            if self.reads.link.jetstream_ok:
                try:
                    await self._catch_up()
                    return
                except Exception as exc:  # noqa: BLE001 - NATS trouble: retried from the cursor
                    raise_if_cancelled()
                    log.warning("[%s] catch-up from %s failed (%s: %s); retrying", self.label, self.cursor,
                                type(exc).__name__, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _catch_up(self) -> None:
        """Replay from the cursor, paced by the sink, then go live.

        The first read starts at the cursor's own message: finding it proves the stream still holds
        everything after it, and its pending count says how far behind the client is. A short gap
        (most: a reconnect, a gateway restart) is read by batched direct gets, which make no
        JetStream state; a longer one, allowed only when snapshots are switched off beyond it,
        through a short-lived pull consumer.
        """
        reads = self.reads
        assert self.cursor is not None
        if self.cursor == 0:  # no message to prove retention by: the consumer tells
            await self._catch_up_with_consumer()
            return
        first = await self.reads.read_direct(self.subject, self.cursor, 1 + min(await self._room(), CATCHUP_BATCH))
        if not first or first[0].seq != self.cursor:
            # Gone from the stream's head, deleted alone, or a replica behind: the stream leader's
            # consumer tells which, and replays or asks for a snapshot accordingly.
            await self._catch_up_with_consumer()
            return
        behind = first[0].pending
        if behind > reads.settings.resync_after_events:
            log.info("[%s] cursor %d: %d events behind", self.label, self.cursor, behind)
            await self._resync_at_end(f"{behind} events behind; a fresh snapshot replaces them")
        elif behind > reads.settings.catchup_direct_max:
            await self._catch_up_with_consumer()
        else:
            reads.stats.catchups += 1
            await self._replay_direct(first[1:])

    async def _replay_direct(self, msgs: list[StoredMsg]) -> None:
        """Deliver batch after batch from the cursor until the held live messages chain on."""
        while True:
            rewinds = self._rewinds
            for msg in msgs:
                if self.cursor is None or msg.seq > self.cursor:
                    self._deliver(msg.seq, msg.data)
                if self._rewinds != rewinds:
                    return  # a new catch-up reads from the rewound cursor
            if (not msgs or msgs[-1].pending == 0) and self._splice():
                return
            if not msgs:
                # The replica that answered has not stored what the live subject already brought.
                await asyncio.sleep(REPLICA_WAIT_S)
            assert self.cursor is not None
            msgs = await self.reads.read_direct(self.subject, self.cursor + 1, min(await self._room(), CATCHUP_BATCH))

    async def _resync_at_end(self, reason: str) -> None:
        """A fresh snapshot instead of a replay, then live from the subject's end.

        Live messages are held while the subject's end is read; then resync_required (the sink holds
        what follows behind the fresh snapshot it now fetches, which is therefore at least as new as
        that end); then the held messages past the end. No live event reaches the client before
        resync_required, and none at or below the end is skipped unless the snapshot covers it.
        """
        self._held = []
        last = await self.reads.subject_last(self.subject)
        self._resync(reason)
        self._go_live_at(last)

    async def _catch_up_with_consumer(self) -> None:
        """Replay from the cursor with a short-lived pull consumer, paced by the sink, then go live."""
        reads = self.reads
        js = reads.link.js
        assert js is not None and self.cursor is not None
        async with reads.catchup_slots:
            info = await js.add_consumer(reads.settings.stream_name, reads.catchup_config(self.subject, self.cursor))
        reads.stats.catchups += 1
        reads.stats.consumers += 1
        pending = info.num_pending or 0
        try:
            # The server starts a consumer at the stream's first sequence when the cursor is older.
            too_old = ((info.delivered.stream_seq or 0) if info.delivered else 0) > self.cursor
            if too_old or pending > reads.settings.resync_after_events:
                log.info("[%s] cursor %d: %s", self.label, self.cursor,
                         "older than the stream" if too_old else f"{pending} events behind")
                await self._resync_at_end("the cursor is older than the stream retains" if too_old else
                                          f"{pending} events behind; a fresh snapshot replaces them")
                return
            await self._replay_from(info.name, pending)
        finally:
            await reads.delete_consumer(info.name)

    async def _replay_from(self, consumer: str, pending: int) -> None:
        reads = self.reads
        assert reads.link.js is not None
        pull = await reads.link.js.pull_subscribe_bind(consumer=consumer, stream=reads.settings.stream_name)
        try:
            while True:
                while pending > 0:
                    room = await self._room()
                    async with reads.catchup_slots:
                        msgs = await pull.fetch(min(room, CATCHUP_BATCH), timeout=5)
                    rewinds = self._rewinds
                    for msg in msgs:
                        problem = delivery_problem(msg, reads.settings.stream_name, consumer, self.subject)
                        if problem:
                            reads.foreign.drop("consumer", self.subject, problem)
                            continue
                        seq, _, pending = ack_sequences(msg.reply)
                        if self.cursor is None or seq > self.cursor:
                            self._deliver(seq, msg.data)
                        if self._rewinds != rewinds:
                            return  # a new catch-up reads from the rewound cursor
                if self._splice():
                    return
                pending = (await pull.consumer_info()).num_pending or 0
        finally:
            await pull.unsubscribe()

    async def _room(self) -> int:
        """Wait until the sink can take more (a replay never overruns the socket it feeds); a sink
        that takes nothing for `GAIA_SLOW_CONSUMER_S` hears `on_stalled`."""
        waiting_since = time.monotonic()
        while True:
            room = self.sink.room()
            if room > 0:
                return room
            if time.monotonic() - waiting_since > self.reads.settings.slow_consumer_s:
                self.sink.on_stalled()
                waiting_since = time.monotonic()
            await asyncio.sleep(ROOM_POLL_S)

    def rewind(self, cursor: int) -> None:
        """The sink dropped what it had queued after `cursor`: read it again, paced by the sink."""
        self._rewinds += 1
        if self._catchup is not None and self._catchup is not asyncio.current_task():
            self._catchup.cancel()  # its own cleanup deletes its consumer
        self._catchup = None  # a running one (this very task) stops at its next delivery check
        self.cursor = cursor
        self._held = []
        self._start_catch_up()

    @property
    def needs_open(self) -> bool:
        """True when opening failed (NATS away) and nothing is subscribed yet."""
        return self._sub is None and not self._closed

    def check(self, subject_last: int) -> None:
        """Called after a reconnect or by the sweeper: catch up if the subject moved past the cursor."""
        if (self._closed or self._sub is None or self.catching_up or self.cursor is None
                or subject_last <= self.cursor):
            return
        log.info("[%s] behind the stream (cursor %d, subject at %d): catching up", self.label, self.cursor,
                 subject_last)
        self.reads.stats.gaps += 1
        self._start_catch_up()

    async def ensure_open(self) -> None:
        """A stream whose open failed (NATS away): subscribe now, then catch up from the client's
        cursor, or (no cursor) start at the end with a fresh snapshot for the client."""
        if not self.needs_open:
            return
        await self._subscribe()
        try:
            last = await self.reads.subject_last(self.subject)
        except BaseException:
            await self._unsubscribe()  # still needs opening: the next sweep tries again
            raise
        if self.cursor is None:
            self._go_live_at(last)
            self._resync("the event stream restarted")
        elif last > self.cursor:
            self._start_catch_up()  # ends with the `resumed` a resume is owed
        else:
            self._go_live_at(last)
            self._finish_replay()  # a resume whose open failed missed nothing: `resumed` now

    async def close(self, unsubscribe: bool = True) -> None:
        """Stop for good: no subscription and no consumer left behind (without `unsubscribe`, the
        subscription is left to the connection's close: the gateway is stopping)."""
        self._closed = True
        if self._catchup is not None:
            self._catchup.cancel()
            await asyncio.gather(self._catchup, return_exceptions=True)
        if unsubscribe:
            await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                raise_if_cancelled()


async def open_stream(stream: ConnectionStream, cursor: int | None) -> OpenResult:
    """Open a client's stream; on NATS trouble log it and leave it to the sweeper (which keeps the cursor)."""
    try:
        result = await stream.open(cursor)
    except Exception as exc:  # noqa: BLE001 - NATS trouble: the stream set opens it later
        raise_if_cancelled()
        log.warning("[%s] stream open failed (%s: %s); will retry", stream.label, type(exc).__name__, exc)
        return OpenResult("offline", cursor)
    log.debug("[%s] stream %s at %s (subject at %d)", stream.label, result.kind, result.cursor, result.replay_until)
    return result
