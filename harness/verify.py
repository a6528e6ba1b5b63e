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
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    diverged: int = 0
    actions: int = 0
    reconnects: int = 0
    resyncs: int = 0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0 and self.diverged == 0

    def lines(self) -> list[str]:
        return [
            f"players {self.players}, {self.duration_s:.0f} s, actions {self.actions}, "
            f"reconnects {self.reconnects}, resyncs {self.resyncs}",
            f"faults injected ({len(self.faults)}): {', '.join(self.faults) or 'none'}",
            f"events in the stream {self.published}; addressed to players after their first event "
            f"{self.expected}; delivered {self.delivered}",
            f"lost {self.lost}, duplicated {self.duplicated}, out of order {self.out_of_order}, "
            f"diverged worlds {self.diverged}",
        ]


async def subject_seqs(nats_url: str, stream: str, subject: str,
                       keep: Callable[[bytes], bool] = lambda _: True) -> list[int]:
    """Stream sequences of every message on a subject (whose payload `keep` accepts), read back in order."""
    nc = await nats.connect(nats_url.split(","))
    try:
        js = nc.jetstream()
        try:
            last = (await js.get_last_msg(stream, subject)).seq
        except nats.js.errors.NotFoundError:
            return []
        sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
        seqs: list[int] = []
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=5)
            seq = msg.metadata.sequence.stream
            if keep(msg.data):
                seqs.append(seq)
        await sub.unsubscribe()
        return seqs
    finally:
        await nc.close()


async def player_seqs(nats_url: str, stream: str, experience: str, user: str) -> list[int]:
    """Every stream sequence a player's session must deliver: the experience's broadcasts, but
    presence about the player themself."""
    def not_about_me(payload: bytes) -> bool:
        event = orjson.loads(payload)
        return not (event.get("type") == "presence" and event.get("user_id") == user)
    return await subject_seqs(nats_url, stream, experience_updates(experience), not_about_me)


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
    """Compare each player's seq list with the stream, and its world with kb's."""
    settings = Settings.from_env()
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        for sim in sims:
            user = sim.client.connected["user_id"] if sim.client.connected else "?"
            got = sim.client.seqs
            stream = await player_seqs(system.nats_url, settings.stream_name, EXPERIENCE, user)
            expected = [s for s in stream if got and s >= got[0]]
            report.published += len(stream)
            report.expected += len(expected)
            report.delivered += len(got)
            report.lost += len(set(expected) - set(got))
            report.duplicated += len(got) - len(set(got))
            report.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b <= a)
            report.actions += sim.stats.actions
            report.reconnects += sim.stats.reconnects
            report.resyncs += sim.stats.resyncs
            report.diverged += int(not await converged(http, system, sim, user))


async def converged(http: aiohttp.ClientSession, system: Target, sim: SimPlayer, user: str) -> bool:
    """Does the player's delta-built world equal kb's view of it (waiting briefly for the last deltas)?"""
    url = f"{system.kb_url}/experiences/{EXPERIENCE}/players/{user}/state"
    for _ in range(50):
        async with http.get(url) as resp:
            view: dict[str, Any] = await resp.json()
        if sim.client.world.version == view["snapshot_version"]:
            return sim.client.world.comparable() == normalise(view)
        if sim.client.world.version > view["snapshot_version"] or sim.client.world.gaps > 0:
            await sim.client.get_state()
        await asyncio.sleep(0.1)
    return False


