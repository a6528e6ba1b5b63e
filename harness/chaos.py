"""Chaos run: players keep playing while nats-server, kb and the gateway are killed and restarted."""
from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson

from harness.player import SimPlayer
from harness.procs import NatsServer, ServiceProcess, free_port, service_env, wait_healthy
from harness.world import normalise
from shared.auth import issue_token
from shared.config import Settings

EXPERIENCE = "wylding-woods"


@dataclass
class ChaosReport:
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


async def subject_seqs(nats_url: str, stream: str, subject: str) -> list[int]:
    """Stream sequences of every message on a subject, read back with an ordered consumer."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            last = (await js.get_last_msg(stream, subject)).seq
        except nats.js.errors.NotFoundError:
            return []
        sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
        seqs: list[int] = []
        while not seqs or seqs[-1] < last:
            msg = await sub.next_msg(timeout=5)
            seqs.append(msg.metadata.sequence.stream)
        await sub.unsubscribe()
        return seqs
    finally:
        await nc.close()


class ChaosSystem:
    """nats-server, kb and gateway as processes on fixed ports, so each can die and come back."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.nats = NatsServer(store_dir=str(work / "nats"), log_path=str(work / "nats.log"))
        kb_port, self.gw_port = free_port(), free_port()
        env = service_env(self.nats.url, kb_port, str(work / "kb.sqlite3"), presence_grace_s="60",
                          presence_renew_s="2", stream_heartbeat_s="1")
        self.kb = ServiceProcess("kb", kb_port, env, log_path=str(work / "kb.log"))
        self.gateway = ServiceProcess("gateway", self.gw_port, env, log_path=str(work / "gateway.log"))

    async def start(self) -> None:
        self.nats.start()
        self.kb.start()
        self.gateway.start()
        await wait_healthy(self.kb.url)
        await wait_healthy(self.gateway.url)

    def stop(self) -> None:
        for proc in (self.gateway, self.kb, self.nats):
            proc.stop()

    async def inject(self, name: str, down_s: float) -> None:
        """SIGKILL one process, keep it down a moment, start it again."""
        target = {"nats": self.nats, "kb": self.kb, "gateway": self.gateway}[name]
        if name == "nats":
            self.nats.kill()
        else:
            assert target.proc is not None
            target.proc.send_signal(signal.SIGKILL)
            target.proc.wait()
        await asyncio.sleep(down_s)
        await asyncio.get_running_loop().run_in_executor(None, target.start)


async def run_chaos(players: int = 4, duration_s: float = 20.0, seed: int = 7,
                    faults: tuple[str, ...] = ("nats", "gateway", "kb"), fault_every_s: float = 4.0) -> ChaosReport:
    """Play for duration_s with a fault every fault_every_s, then check every player's stream and world."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="gaia-chaos-"))
    system = ChaosSystem(work)
    report = ChaosReport(players=players, duration_s=duration_s)
    try:
        await system.start()
        settings = Settings.from_env()
        base = f"http://127.0.0.1:{system.gw_port}"
        sims = [SimPlayer([base], issue_token(settings, f"chaos{i}"), EXPERIENCE, random.Random(rng.random()))
                for i in range(players)]
        until = time.monotonic() + duration_s
        play = [asyncio.create_task(sim.run(until)) for sim in sims]
        order: list[str] = []
        while time.monotonic() < until - fault_every_s / 2:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * fault_every_s)
            if faults and time.monotonic() < until - 1:
                if not order:  # every kind of fault once per round, in a random order
                    order = rng.sample(list(faults), len(faults))
                name = order.pop()
                report.faults.append(name)
                await system.inject(name, rng.uniform(0.2, 1.0))
        await asyncio.gather(*play)
        await settle(system, sims)
        await check(system, sims, report)
        for sim in sims:
            await sim.client.close()
        return report
    finally:
        system.stop()
        shutil.rmtree(work, ignore_errors=True)


async def settle(system: ChaosSystem, sims: list[SimPlayer]) -> None:
    """Everything up, every player connected, kb's outbox empty, the last events delivered."""
    await wait_healthy(system.kb.url, timeout=60)
    await wait_healthy(system.gateway.url, timeout=60)
    for sim in sims:
        await sim.ensure_connected(time.monotonic() + 60)
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(f"{system.kb.url}/health") as resp:
                if (await resp.json())["outbox"]["pending"] == 0:
                    break
            await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)


async def check(system: ChaosSystem, sims: list[SimPlayer], report: ChaosReport) -> None:
    """Compare each player's seq list with the stream, and its world with kb's."""
    settings = Settings.from_env()
    async with aiohttp.ClientSession(headers={"X-API-Key": settings.kb_api_key}) as http:
        for sim in sims:
            user = sim.client.connected["user_id"] if sim.client.connected else "?"
            got = sim.client.seqs
            stream = await subject_seqs(system.nats.url, settings.stream_name, f"world.updates.user.{user}")
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


async def converged(http: aiohttp.ClientSession, system: ChaosSystem, sim: SimPlayer, user: str) -> bool:
    """Does the player's delta-built world equal kb's view of it (waiting briefly for the last deltas)?"""
    url = f"{system.kb.url}/experiences/{EXPERIENCE}/players/{user}/state"
    for _ in range(50):
        async with http.get(url) as resp:
            view: dict[str, Any] = await resp.json()
        if sim.client.world.version == view["snapshot_version"]:
            return sim.client.world.comparable() == normalise(view)
        if sim.client.world.version > view["snapshot_version"] or sim.client.world.gaps > 0:
            await sim.client.get_state()
        await asyncio.sleep(0.1)
    return False


def write_report(report: ChaosReport, path: Path, command: str) -> None:
    """Replace the chaos section of docs/reliability.md with this run's figures."""
    text = path.read_text() if path.exists() else ""
    marker_start, marker_end = "<!-- chaos:start -->", "<!-- chaos:end -->"
    body = "\n".join([marker_start, f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}", "",
                      *[f"- {line}" for line in report.lines()], marker_end])
    if marker_start in text:
        head, rest = text.split(marker_start, 1)
        text = head + body + rest.split(marker_end, 1)[1]
    else:
        text += "\n" + body + "\n"
    path.write_text(text)


def summarize(report: ChaosReport) -> str:
    return orjson.dumps(report.__dict__ | {"ok": report.ok}, option=orjson.OPT_INDENT_2).decode()
