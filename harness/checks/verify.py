"""Checks shared by chaos runs and scenarios: every event delivered once in order, worlds converged."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import aiohttp
import orjson

from harness.checks.loss import Stream, StreamMessage, check_chain
from harness.checks.snapshot import check_snapshots
from harness.checks.streamread import read_subject  # with a gateway's rights: direct gets, no consumer
from harness.client.player import SimPlayer
from harness.client.world import normalise
from harness.system.procs import wait_healthy
from shared.config import Settings
from shared.subjects import experience_updates

EXPERIENCE = "wylding-woods"
CONVERGE_WAIT_S = 15.0  # kb answers with the last deltas, or after a kill once the world has an owner again


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
    replays: int = 0  # resumes served from the stream (`resumed`)
    needless: int = 0  # resyncs the stream shows were not due
    repairs: int = 0
    resync_examples: list[str] = field(default_factory=list)
    snapshots_checked: int = 0  # resync snapshots compared with the world the stream yields at their version
    snapshot_mismatches: list[str] = field(default_factory=list)
    settings: str = ""  # the system's settings that differ from the shipped defaults, read from its environment

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0 and self.diverged == 0
                and self.repairs == 0 and self.needless == 0 and not self.snapshot_mismatches)

    @property
    def checked_share(self) -> float:
        """Share of the events owed that were checked one by one (the rest a due resync forgave)."""
        return self.expected / max(1, self.expected + self.replaced)

    def lines(self) -> list[str]:
        return [
            f"players {self.players}, {self.duration_s:.0f} s, actions {self.actions}, "
            f"reconnects {self.reconnects}",
            f"faults injected ({len(self.faults)}): {', '.join(self.faults) or 'none'}",
            *([f"settings that differ from the shipped defaults: {self.settings}"] if self.settings else []),
            f"events in the stream {self.published}; owed to players since they connected "
            f"{self.expected + self.replaced}, of those checked one by one {self.expected} "
            f"({self.checked_share:.1%}), delivered {self.delivered}; "
            f"forgiven by the snapshot after a due resync {self.replaced}; "
            f"also received from before the count starts {self.before_count}",
            f"resumes replayed from the stream {self.replays}; resyncs {self.resyncs}, of them not due {self.needless}"
            f"{' (' + '; '.join(self.resync_examples) + ')' if self.resync_examples else ''}; "
            f"gap repairs with get_state {self.repairs}; resync snapshots compared with the world the stream "
            f"yields at their version {self.snapshots_checked}, differing {len(self.snapshot_mismatches)}"
            + "".join(f" ({m})" for m in self.snapshot_mismatches[:3]),
            f"lost {self.lost} (checked one by one: {self.checked_share:.1%}), duplicated {self.duplicated}, "
            f"out of order {self.out_of_order}, diverged worlds {self.diverged}",
        ]


async def subject_seqs(nats_url: str, stream: str, subject: str,
                       keep: Callable[[bytes], bool] = lambda _: True) -> list[int]:
    """Stream sequences of every message on a subject (whose payload `keep` accepts), read back in order."""
    seqs: list[int] = []
    await read_subject(nats_url, stream, subject, lambda seq, data, _: seqs.append(seq) if keep(data) else None)
    return seqs


async def stream_messages(nats_url: str, stream: str, subject: str,
                          updates: dict[int, dict[str, Any]] | None = None) -> list[StreamMessage]:
    """Every message on a subject, read back in order; world_updates also into `updates` by version, if given."""
    out: list[StreamMessage] = []

    def keep(seq: int, payload: bytes, stored_at: float) -> None:
        event = orjson.loads(payload)
        if updates is not None and event.get("type") == "world_update":
            updates[event["snapshot_version"]] = event
        out.append(StreamMessage(seq, event.get("type", "?"), event.get("snapshot_version"), event.get("user_id"),
                                 stored_at))
    await read_subject(nats_url, stream, subject, keep)
    return out


async def player_seqs(nats_url: str, stream: str, experience: str, user: str) -> list[int]:
    """Every stream sequence a player's session delivers: the experience's broadcasts, but presence
    about the player themself."""
    messages = await stream_messages(nats_url, stream, experience_updates(experience))
    return [m.seq for m in messages if not (m.kind == "presence" and m.about == user)]


def resync_threshold(system: object) -> int:
    """The system's GAIA_RESYNC_AFTER_EVENTS: its own setting if it says, else this process's."""
    own = getattr(system, "env_settings", {}).get("resync_after_events")
    return int(own) if own is not None else Settings.from_env().resync_after_events


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
    threshold = resync_threshold(system)
    updates: dict[int, dict[str, Any]] = {}
    messages = await stream_messages(system.nats_url, settings.stream_name, experience_updates(EXPERIENCE), updates)
    report.published += len(messages)
    stream = Stream(messages)
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        for sim in sims:
            user = sim.client.connected["user_id"] if sim.client.connected else "?"
            got = sim.client.seqs
            result = check_chain(stream, sim.client.frames, user, threshold)
            due, replaced = result.due, result.forgiven
            report.expected += len(due)
            report.replaced += len(replaced)
            report.delivered += len(due & set(got))
            report.before_count += len(set(got) - due - replaced)
            report.lost += len(due - set(got))
            report.replays += result.replays
            report.needless += len(result.needless)
            room = max(0, 3 - len(report.resync_examples))
            report.resync_examples += [f"{user}: {r.reason or 'no reason'}; {r.why}" for r in result.resyncs][:room]
            report.duplicated += len(got) - len(set(got))
            report.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b <= a)
            report.actions += sim.stats.actions
            report.reconnects += sim.stats.reconnects
            report.resyncs += sum(1 for f in sim.client.frames if f.get("type") == "resync_required")
            snapshots = check_snapshots(sim.client.frames, updates, user)
            report.snapshots_checked += snapshots.checked
            report.snapshot_mismatches += snapshots.mismatches
            report.repairs += sim.stats.repairs
            report.diverged += int(not await converged(http, system, sim, user))


async def converged(http: aiohttp.ClientSession, system: Target, sim: SimPlayer, user: str) -> bool:
    """Does the player's delta-built world equal kb's view of it? Compared as it stands: no refresh first."""
    url = f"{system.kb_url}/experiences/{EXPERIENCE}/players/{user}/state"
    deadline = time.monotonic() + CONVERGE_WAIT_S
    while time.monotonic() < deadline:  # the last deltas may still be on their way
        async with http.get(url) as resp:
            view: dict[str, Any] = await resp.json()
        # A kb that just lost or took over the world (after a kill) may answer 503 for a moment.
        if resp.status == 200 and sim.client.world.version == view["snapshot_version"]:
            return sim.client.world.gaps == 0 and sim.client.world.comparable() == normalise(view)
        await asyncio.sleep(0.1)
    return False
