"""Checks shared by chaos runs and scenarios: every event delivered once in order, worlds converged."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import aiohttp
import nats
import orjson

from harness.player import SimPlayer
from harness.procs import wait_healthy
from harness.world import normalise
from shared.config import Settings
from shared.subjects import experience_updates

EXPERIENCE = "wylding-woods"


class Target(Protocol):
    """Where the system under test lives."""

    @property
    def nats_url(self) -> str: ...

    @property
    def kb_url(self) -> str: ...

    @property
    def gateway_url(self) -> str: ...


@dataclass
class RunReport:
    """What was injected, what was published, what arrived."""

    players: int
    duration_s: float
    faults: list[str] = field(default_factory=list)
    published: int = 0
    expected: int = 0
    delivered: int = 0
    before_count: int = 0  # received before the count starts (presence that may precede a subscription)
    replaced: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    diverged: int = 0
    actions: int = 0
    reconnects: int = 0
    resyncs: int = 0
    repairs: int = 0

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0 and self.diverged == 0
                and self.repairs == 0)

    def lines(self) -> list[str]:
        return [
            f"players {self.players}, {self.duration_s:.0f} s, actions {self.actions}, "
            f"reconnects {self.reconnects}",
            f"faults injected ({len(self.faults)}): {', '.join(self.faults) or 'none'}",
            f"events in the stream {self.published}; addressed to players since they connected {self.expected}, "
            f"of those delivered {self.delivered}, replaced by a later snapshot {self.replaced}; "
            f"also received from before the count starts {self.before_count}",
            f"resyncs {self.resyncs}, gap repairs with get_state {self.repairs}",
            f"lost {self.lost}, duplicated {self.duplicated}, out of order {self.out_of_order}, "
            f"diverged worlds {self.diverged}",
        ]


@dataclass(frozen=True)
class StreamMessage:
    """One message of an experience subject, as far as delivery checks care."""

    seq: int
    kind: str
    version: int | None  # snapshot_version of a world_update
    about: str | None  # the user a presence event is about


async def read_subject(nats_url: str, stream: str, subject: str, each: Callable[[int, bytes], None]) -> None:
    """Call each(seq, payload) for every message on a subject, in order."""
    nc = await nats.connect(nats_url.split(","))
    try:
        js = nc.jetstream()
        try:
            last = (await js.get_last_msg(stream, subject, direct=True)).seq
        except nats.js.errors.NotFoundError:
            return
        sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=5)
            seq = msg.metadata.sequence.stream
            each(seq, msg.data)
        await sub.unsubscribe()
    finally:
        await nc.close()


async def subject_seqs(nats_url: str, stream: str, subject: str,
                       keep: Callable[[bytes], bool] = lambda _: True) -> list[int]:
    """Stream sequences of every message on a subject (whose payload `keep` accepts), read back in order."""
    seqs: list[int] = []
    await read_subject(nats_url, stream, subject, lambda seq, data: seqs.append(seq) if keep(data) else None)
    return seqs


async def stream_messages(nats_url: str, stream: str, subject: str) -> list[StreamMessage]:
    """Every message on a subject, read back in order."""
    out: list[StreamMessage] = []

    def keep(seq: int, payload: bytes) -> None:
        event = orjson.loads(payload)
        out.append(StreamMessage(seq, event.get("type", "?"), event.get("snapshot_version"), event.get("user_id")))
    await read_subject(nats_url, stream, subject, keep)
    return out


async def player_seqs(nats_url: str, stream: str, experience: str, user: str) -> list[int]:
    """Every stream sequence a player's session delivers: the experience's broadcasts, but presence
    about the player themself."""
    messages = await stream_messages(nats_url, stream, experience_updates(experience))
    return [m.seq for m in messages if not (m.kind == "presence" and m.about == user)]


def first_past(messages: list[StreamMessage], version: int) -> float:
    """Sequence of the first world_update past `version` (infinity if none)."""
    return next((m.seq for m in messages if m.kind == "world_update" and (m.version or 0) > version), float("inf"))


def snapshot_windows(frames: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(last seq before a later snapshot, that snapshot's version), for every snapshot after the first.

    A snapshot replaces the client's state: what it covers need not arrive as events (after
    `resync_required`, or after a resume whose replay did not reach the world's version).
    """
    windows, last_seq, first = [], 0, True
    for frame in frames:
        if frame.get("type") == "area_of_interest":
            if not first:
                windows.append((last_seq, frame["snapshot_version"]))
            first = False
        if "seq" in frame:
            last_seq = frame["seq"]
    return windows


def due_and_replaced(messages: list[StreamMessage], frames: list[dict[str, Any]],
                     user: str) -> tuple[set[int], set[int]]:
    """Sequences this player had to receive since its first snapshot, and those a resync snapshot replaced.

    A world_update is due when its version is past the first snapshot's, whether or not anything
    arrived before it; a presence event when it follows the first world_update past that snapshot
    (earlier ones may precede the subscription). What a later snapshot covers (world_updates up to
    its version, presence before the first world_update past it) counts as replaced, not lost.
    """
    views = [f["snapshot_version"] for f in frames if f.get("type") == "area_of_interest"]
    if not views:
        return set(), set()
    mine = [m for m in messages if not (m.kind == "presence" and m.about == user)]
    windows = snapshot_windows(frames)
    presence_from = first_past(mine, views[0])
    due, replaced = set(), set()
    spans = [(after, version, first_past(mine, version)) for after, version in windows]
    for m in mine:
        is_update = m.kind == "world_update"
        if (is_update and (m.version or 0) <= views[0]) or (not is_update and m.seq < presence_from):
            continue
        covered = any(after < m.seq and ((m.version or 0) <= version if is_update else m.seq < until)
                      for after, version, until in spans)
        (replaced if covered else due).add(m.seq)
    return due, replaced


async def settle(system: Target, sims: list[SimPlayer]) -> None:
    """Everything up, every player connected, kb's outbox empty, the last events delivered."""
    await wait_healthy(system.kb_url, timeout=60)
    await wait_healthy(system.gateway_url, timeout=60)
    for sim in sims:
        await sim.ensure_connected(time.monotonic() + 60)
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(f"{system.kb_url}/health") as resp:
                if (await resp.json())["outbox"]["pending"] == 0:
                    break
            await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)


async def check(system: Target, sims: list[SimPlayer], report: RunReport) -> None:
    """Compare what each player received with the stream, and its delta-built world with kb's."""
    settings = Settings.from_env()
    messages = await stream_messages(system.nats_url, settings.stream_name, experience_updates(EXPERIENCE))
    report.published += len(messages)
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        for sim in sims:
            user = sim.client.connected["user_id"] if sim.client.connected else "?"
            got = sim.client.seqs
            due, replaced = due_and_replaced(messages, sim.client.frames, user)
            report.expected += len(due)
            report.replaced += len(replaced)
            report.delivered += len(due & set(got))
            report.before_count += len(set(got) - due - replaced)
            report.lost += len(due - set(got))
            report.duplicated += len(got) - len(set(got))
            report.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b <= a)
            report.actions += sim.stats.actions
            report.reconnects += sim.stats.reconnects
            report.resyncs += sum(1 for f in sim.client.frames if f.get("type") == "resync_required")
            report.repairs += sim.stats.repairs
            report.diverged += int(not await converged(http, system, sim, user))


async def converged(http: aiohttp.ClientSession, system: Target, sim: SimPlayer, user: str) -> bool:
    """Does the player's delta-built world equal kb's view of it? Compared as it stands: no refresh first."""
    url = f"{system.kb_url}/experiences/{EXPERIENCE}/players/{user}/state"
    for _ in range(50):  # the last deltas may still be on their way
        async with http.get(url) as resp:
            view: dict[str, Any] = await resp.json()
        if sim.client.world.version == view["snapshot_version"]:
            return sim.client.world.gaps == 0 and sim.client.world.comparable() == normalise(view)
        await asyncio.sleep(0.1)
    return False
