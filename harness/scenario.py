"""`gaia-harness scenario`: N simulated players share a world; everyone must end up agreeing with kb."""
from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass

from harness.checks.verify import EXPERIENCE, RunReport, Target, check, settle
from harness.client.player import SimPlayer
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings


@dataclass(frozen=True)
class ExternalTarget:
    """A system someone else started (make run, a staging cluster)."""

    gateway_url: str
    kb_url: str
    nats_url: str


def social_counts(sims: list[SimPlayer]) -> tuple[int, int]:
    """(changes by other players seen, autonomous world changes seen), over all players."""
    others = world = 0
    for sim in sims:
        me = sim.client.connected["user_id"] if sim.client.connected else None
        for frame in sim.client.frames:
            if frame.get("type") != "world_update" or not frame["changes"]:
                continue
            if frame["actor_id"] == "world":
                world += 1
            elif frame["actor_id"] != me:
                others += 1
    return others, world


async def progress(sims: list[SimPlayer], started: float, until: float) -> None:
    """One live line, redrawn every second."""
    while time.monotonic() < until:
        connected = sum(1 for s in sims if s.client.is_open)
        actions = sum(s.stats.actions for s in sims)
        events = sum(len(s.client.seqs) for s in sims)
        others, world = social_counts(sims)
        sys.stdout.write(f"\r[{time.monotonic() - started:5.1f}s] players {connected}/{len(sims)} connected, "
                         f"actions {actions}, events {events}, others' changes seen {others}, "
                         f"world changes seen {world}   ")
        sys.stdout.flush()
        await asyncio.sleep(1.0)
    sys.stdout.write("\n")


async def run_scenario(players: int, duration_s: float, seed: int, target: Target | None = None,
                       tick_s: float = 1.0) -> tuple[RunReport, int, int]:
    """Play, then verify every stream and every world; returns the report and the social counts."""
    system: LocalSystem | None = None
    if target is None:
        system = await LocalSystem(kb_clock_tick_s=str(tick_s), presence_renew_s="2", stream_sweep_s="1").start()
        target = system
    try:
        rng = random.Random(seed)
        settings = Settings.from_env()
        sims = [SimPlayer([target.gateway_url], issue_token(settings, f"bot{i}"), EXPERIENCE,
                          random.Random(rng.random())) for i in range(players)]
        started = time.monotonic()
        until = started + duration_s
        await asyncio.gather(progress(sims, started, until), *(s.run(until) for s in sims))
        await settle(target, sims)
        report = RunReport(players=players, duration_s=duration_s)
        await check(target, sims, report)
        others, world = social_counts(sims)
        for sim in sims:
            await sim.client.close()
        return report, others, world
    finally:
        if system is not None:
            system.stop()
