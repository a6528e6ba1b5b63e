"""The gateway's CPU per connect against the handshake floor (harness/bench/floors/handshake.py), in interleaved rounds.

Each round connects the same number of fresh players to the gateway (shipped settings: presence
announced, the roster in every snapshot) and to the floor, which writes a `connected` frame and a
snapshot of the sizes the gateway just wrote. Each process's CPU is read from quiet to quiet, so
work a connect leaves behind (presence windows, kb's answer) is counted; closing is not.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import psutil

from harness.bench.kit import EXPERIENCE, cpu_quiet, cpu_seconds
from harness.report import Phase, process_settings
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from harness.system.procs import free_port, stop_process, wait_for_port
from shared.auth import issue_token
from shared.config import Settings

log = logging.getLogger(__name__)

IN_FLIGHT = 50  # connects in progress at once


@dataclass
class Opened:
    """Sockets opened in one round, and the sizes of the two frames each received first."""

    sockets: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)
    connected: list[int] = field(default_factory=list)
    snapshot: list[int] = field(default_factory=list)
    players_in_snapshot: list[int] = field(default_factory=list)


async def open_one(http: aiohttp.ClientSession, url: str, opened: Opened) -> None:
    """Connect and read until the snapshot; the socket stays open (its other frames are not read)."""
    ws = await http.ws_connect(url, max_msg_size=0, heartbeat=None)
    opened.sockets.append(ws)
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"closed before the snapshot: {msg.type} {msg.data!r}")
        frame = orjson.loads(msg.data)
        if frame["type"] == "connected":
            opened.connected.append(len(msg.data.encode()))
        elif frame["type"] == "area_of_interest":
            opened.snapshot.append(len(msg.data.encode()))
            opened.players_in_snapshot.append(len(frame.get("players") or []))
            return


async def open_many(http: aiohttp.ClientSession, base_ws: str, prefix: str, count: int) -> tuple[Opened, float]:
    """`count` fresh players connected, at most IN_FLIGHT at once; (what was opened, seconds it took)."""
    settings = Settings.from_env()
    urls = [f"{base_ws}/ws/experience?experience={EXPERIENCE}&token={issue_token(settings, f'{prefix}{i}')}"
            for i in range(count)]
    opened, slots = Opened(), asyncio.Semaphore(IN_FLIGHT)

    async def one(url: str) -> None:
        async with slots:
            await open_one(http, url, opened)
    started = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return opened, time.perf_counter() - started


async def close_all(opened: Opened) -> None:
    await asyncio.gather(*(ws.close() for ws in opened.sockets), return_exceptions=True)


async def metered(http: aiohttp.ClientSession, base_ws: str, prefix: str, count: int,
                  procs: dict[str, psutil.Process]) -> tuple[Opened, float, dict[str, float], bool]:
    """One side of a round: (opened, seconds, CPU ms per connect by process and client, was it quiet before)."""
    quiet = await cpu_quiet(list(procs.values()))
    me = psutil.Process()
    before = {k: cpu_seconds(p) for k, p in procs.items()} | {"client": cpu_seconds(me)}
    opened, seconds = await open_many(http, base_ws, prefix, count)
    await cpu_quiet(list(procs.values()))
    after = {k: cpu_seconds(p) for k, p in procs.items()} | {"client": cpu_seconds(me)}
    return opened, seconds, {k: (after[k] - before[k]) / count * 1000 for k in before}, quiet


async def bench_connect_floor(rounds: int, per_round: int, phase: Phase, spreads: Rounds) -> None:
    """Gateway and floor in turn, `rounds` times; figures connect_cpu_vs_floor (per round) and connect rates."""
    system = await LocalSystem().start()
    phase.settings = process_settings({**os.environ, **system.gateway.env})
    rows = phase.rows
    floor_port = free_port()
    floor = psutil.Popen([sys.executable, "-m", "harness.bench.floors.handshake", "--port", str(floor_port)],
                         env={**os.environ, **system.gateway.env})
    rows += ["| round, server | connects/s | CPU per connect by process (ms) | connected / snapshot frame (bytes, "
             "mean) | players in the snapshot (mean) |", "|---|---|---|---|---|"]
    try:
        wait_for_port(floor_port, proc=floor)  # type: ignore[arg-type]
        nats_proc, kb, gw = system.server_procs()
        gateway_side = {"gateway": gw, "kb": kb, "nats-server": nats_proc}
        floor_side = {"floor": psutil.Process(floor.pid)}
        gw_ws = system.gateway_url.replace("http", "ws", 1)
        floor_url = f"http://127.0.0.1:{floor_port}"
        sizes: dict[str, list[int]] = {"connected": [], "snapshot": []}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for r in range(rounds):
                order = ("gateway", "floor") if r % 2 == 0 else ("floor", "gateway")
                per: dict[str, float] = {}
                for side in order:
                    if side == "gateway":
                        opened, seconds, cpu, quiet = await metered(http, gw_ws, f"hs{r}_", per_round, gateway_side)
                        sizes = {"connected": opened.connected, "snapshot": opened.snapshot}
                        per["gateway"] = cpu["gateway"]
                    else:  # the sizes of the gateway's latest round (the first round starts with the gateway)
                        async with http.post(f"{floor_url}/sizes", json=sizes) as resp:
                            resp.raise_for_status()
                        opened, seconds, cpu, quiet = await metered(http, floor_url.replace("http", "ws", 1),
                                                                    f"hf{r}_", per_round, floor_side)
                        per["floor"] = cpu["floor"]
                    spreads.add(f"{side}_connects_per_s", per_round / seconds)
                    spreads.add(f"{side}_connect_ms", cpu[side])
                    cells = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                    rows.append(f"| {r + 1}: {'our gateway' if side == 'gateway' else 'handshake floor'} | "
                                f"{per_round / seconds:.0f} | {cells}{'' if quiet else ' (CPU not quiet before)'} | "
                                f"{mean(opened.connected):.0f} / {mean(opened.snapshot):.0f} | "
                                f"{mean(opened.players_in_snapshot) if side == 'gateway' else 0:.0f} |")
                    print(f"  connect round {r + 1}, {side}: {per_round / seconds:.0f}/s, CPU ms/connect {cells}")
                    await close_all(opened)
                spreads.add("connect_cpu_vs_floor", per["gateway"] / max(per["floor"], 1e-9))
    finally:
        stop_process(floor)  # type: ignore[arg-type]
        system.stop()


def mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else float("nan")
