"""Chaos run: players keep playing while nats-server, kb and the gateway are killed and restarted."""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from harness.checks.verify import EXPERIENCE, RunReport, check, settle
from harness.client.player import SimPlayer
from harness.report import machine, process_settings, replace_section
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings


async def run_chaos(players: int = 4, duration_s: float = 20.0, seed: int = 7,
                    faults: tuple[str, ...] = ("nats", "gateway", "kb"), fault_every_s: float = 4.0) -> RunReport:
    """Play for duration_s with a fault every fault_every_s, then check every player's stream and world."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="gaia-chaos-"))
    system = LocalSystem(work, presence_renew_s="2", stream_sweep_s="1")
    report = RunReport(players=players, duration_s=duration_s)
    try:
        await system.start()
        report.settings = process_settings({**os.environ, **system.gateway.env})
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


def write_report(report: RunReport, path: Path, command: str) -> None:
    """Replace the chaos section of docs/reliability.md with this run's figures."""
    start, end = "<!-- chaos:start -->", "<!-- chaos:end -->"
    body = "\n".join([start, f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}", "",
                      *[f"- {line}" for line in report.lines()], end])
    path.write_text(replace_section(path.read_text() if path.exists() else "", body, start, end))


def summarize(report: RunReport) -> str:
    return orjson.dumps(report.__dict__ | {"ok": report.ok}, option=orjson.OPT_INDENT_2).decode()
