"""The send tick's price and gain: gateway CPU per delivery and latency with GAIA_SEND_TICK_MS=50 and without.

Two gateways on one nats-server and kb, the second with the tick; each line connects its clients to
one of them and publishes broadcasts at a steady rate, so the only difference is the tick. Lines
alternate round after round (100 and 1,000 events/s, tick off and on).
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from harness.bench.clients import ForwarderListener, GatewayListener
from harness.bench.kit import EXPERIENCE, count_missing, cpu_quiet, publish_broadcasts, wait_all
from harness.report import Phase, pct, tail, tail_value
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from harness.system.procs import ServiceProcess, free_port, stop_process, wait_for_port
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import experience_updates, live_subject

TICK_MS = 50
PREFIX = {"gateway": "", "forwarder": "fwd_"}  # each server's figures are named with its prefix
NAME = {"gateway": "gateway", "forwarder": "minimal forwarder"}
LINES = ((100, 200, 3.0), (1000, 20, 3.0))  # events/s, clients, seconds


async def publish_paced(nats_url: str, count: int, rate: float, first: int) -> dict[int, float]:
    """Publish `count` broadcasts at `rate`/s; {version: when published (perf_counter)}."""
    sent: dict[int, float] = {}
    await publish_broadcasts(nats_url, count, rate, first, sent=sent)
    return sent


async def connect_to(http: aiohttp.ClientSession, base: str, prefix: str, count: int) -> list[GatewayListener]:
    """`count` listeners on the gateway at `base`, each with its snapshot."""
    settings = Settings.from_env()
    ws = base.replace("http", "ws", 1)
    listeners = [GatewayListener(http, f"{ws}/ws/experience?experience={EXPERIENCE}&token="
                                       f"{issue_token(settings, f'{prefix}{i}')}") for i in range(count)]
    slots = asyncio.Semaphore(50)

    async def one(listener: GatewayListener) -> None:
        async with slots:
            await listener.start()
    await asyncio.gather(*(one(listener) for listener in listeners))
    return listeners


async def start_forwarders(system: LocalSystem) -> dict[int, tuple[psutil.Popen, int]]:
    """The minimal forwarder without a tick and with one (harness/bench/floors/forwarder.py): {tick: (process, port)}."""
    forwarders = {}
    for tick in (0, TICK_MS):
        port = free_port()
        forwarders[tick] = (psutil.Popen([sys.executable, "-m", "harness.bench.floors.forwarder", "--port", str(port),
                                          "--nats", system.nats.url_as("gateway"), "--tick-ms", str(tick)]), port)
    for proc, port in forwarders.values():
        wait_for_port(port, proc=proc)
    return forwarders


async def connect_forwarder(http: aiohttp.ClientSession, port: int, count: int) -> list[ForwarderListener]:
    """`count` sockets of the forwarder on `port`, each with its subscription in place."""
    live = live_subject(experience_updates(EXPERIENCE))
    listeners = [ForwarderListener(http, f"ws://127.0.0.1:{port}/ws?subject={live}") for _ in range(count)]
    await asyncio.gather(*(listener.start() for listener in listeners))
    return listeners


def write_calls(proc: psutil.Process) -> int:
    """The process's write system calls so far (/proc/PID/io syscw: write and writev, which uvloop's sockets use)."""
    return int(proc.io_counters().write_count)


async def measure_line(system: LocalSystem, server: psutil.Process, listeners: list[Any], rate: int, seconds: float,
                       first: int) -> tuple[int, float, float, list[float], int]:
    """Publish at `rate` for `seconds` to connected listeners: (delivered, user s, kernel s, waits in ms, write
    system calls)."""
    await cpu_quiet([server, *system.server_procs()])
    count = int(rate * seconds)
    writes = write_calls(server)
    before = server.cpu_times()
    sent = await publish_paced(system.nats_url, count, rate, first)
    got = await wait_all(listeners, len(listeners) * count, timeout=30 + seconds)
    after = server.cpu_times()
    writes = write_calls(server) - writes
    waits = [(got_at.by_version[v] - at) * 1000 for got_at in (x.arrivals for x in listeners)
             for v, at in sent.items() if v in got_at.by_version]
    await asyncio.gather(*(listener.close() for listener in listeners))
    return got, after.user - before.user, after.system - before.system, waits, writes


async def bench_tick(system: LocalSystem, rounds: int, phase: Phase, spreads: Rounds, failures: list[str]) -> None:
    """Rounds of every line; each round's CPU ratio (tick on / off) at each rate kept for the verdicts, and
    the minimal forwarder's own ratio at the last rate (the floor of the design with a tick)."""
    ticked = ServiceProcess("gateway", free_port(), {**system.gateway.env, "GAIA_SEND_TICK_MS": str(TICK_MS)},
                            log_path=str(Path(system.work) / "gateway-tick.log"),
                            nats_password=system.nats.passwords["gateway"]).start()
    forwarders = await start_forwarders(system)
    gateways = {0: (system.gateway_url, system.server_procs()[2]),
                TICK_MS: (ticked.url, psutil.Process(ticked.proc.pid))}  # type: ignore[union-attr]
    floor_rate, floor_clients, floor_seconds = LINES[-1]
    phase.rows += ["| round, line | delivered/expected | CPU per delivery (us) | of it, user / kernel (us) | "
                   "writes per delivery | p50 (ms) | tail (ms) |", "|---|---|---|---|---|---|---|"]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for r in range(rounds):
                per: dict[tuple[str, int, int], float] = {}
                plan = [("gateway", rate, clients, seconds, tick) for rate, clients, seconds in LINES
                        for tick in (0, TICK_MS)]
                plan += [("forwarder", floor_rate, floor_clients, floor_seconds, tick) for tick in (0, TICK_MS)]
                for server, rate, clients, seconds, tick in plan:
                    if server == "gateway":
                        base, proc = gateways[tick]
                        listeners: list[Any] = await connect_to(http, base, f"tick{tick}r{rate}_", clients)
                    else:
                        fwd, port = forwarders[tick]
                        proc = psutil.Process(fwd.pid)
                        listeners = await connect_forwarder(http, port, clients)
                    first = (50 + 10 * r) * 10**6 + rate * 1000 + tick + (500 if server == "forwarder" else 0)
                    got, user, kernel, waits, writes = await measure_line(system, proc, listeners, rate, seconds,
                                                                          first)
                    expected = clients * int(rate * seconds)
                    label = (f"{NAME[server]}, {rate} events/s to {clients} clients, "
                             + (f"send tick {tick} ms" if tick else "no tick"))
                    count_missing(failures, f"send tick, {label}", expected, expected - got)
                    key = f"{PREFIX[server]}tick{tick}_{rate}"
                    us = (user + kernel) / max(got, 1) * 1e6
                    per[(server, rate, tick)] = us
                    spreads.add(f"{key}_us", us)
                    spreads.add(f"{key}_user_us", user / max(got, 1) * 1e6)
                    spreads.add(f"{key}_system_us", kernel / max(got, 1) * 1e6)
                    spreads.add(f"{key}_p99_ms", tail_value(waits))
                    spreads.add(f"{key}_writes", writes / max(got, 1))
                    phase.rows.append(f"| {r + 1}: {label} | {got}/{expected} | {us:.1f} | "
                                      f"{user / max(got, 1) * 1e6:.1f} / {kernel / max(got, 1) * 1e6:.1f} | "
                                      f"{writes / max(got, 1):.3f} | {pct(waits, 50):.1f} | {tail(waits)} |")
                    print(f"  send tick, round {r + 1}, {label}: {us:.1f} us/delivery, p99 {tail_value(waits):.1f} ms")
                for server, rate, _, _, tick in plan:
                    if tick:
                        spreads.add(f"{PREFIX[server]}tick_cpu_ratio_{rate}",
                                    per[(server, rate, tick)] / max(per[(server, rate, 0)], 1e-9))
                # The verdict: the gateway's gain from the tick against the floor's in the same round, so what
                # no tick can share (a copy's read, its Python work) is judged, not left out.
                spreads.add(f"tick_vs_floor_{floor_rate}", spreads.values[f"tick_cpu_ratio_{floor_rate}"][-1]
                            / max(spreads.values[f"{PREFIX['forwarder']}tick_cpu_ratio_{floor_rate}"][-1], 1e-9))
        phase.rows += ["", "| per round, then the median (min, max) | value |", "|---|---|"]
        for rate, clients, _ in LINES:
            phase.rows += tick_rows(spreads, PREFIX["gateway"], f"{rate} events/s to {clients} clients", rate)
        floor_name = f"the minimal forwarder, {floor_rate} events/s to {floor_clients} sockets"
        phase.rows += tick_rows(spreads, PREFIX["forwarder"], floor_name, floor_rate)
        phase.rows += [f"| **{floor_rate} events/s: the gateway's ratio (tick / none) over the floor's, each "
                       f"round's (the verdict)** | {spreads.spread(f'tick_vs_floor_{floor_rate}')} |"]
        phase.rows += ["", floor_note(spreads, floor_rate)]
    finally:
        ticked.stop()
        for proc, _ in forwarders.values():
            stop_process(proc)


def floor_note(spreads: Rounds, rate: int) -> str:
    """What the floor's lines say about any tick's ratio, from this run's medians."""
    floor = PREFIX["forwarder"]
    user = spreads.median(f"{floor}tick{TICK_MS}_{rate}_user_us")
    whole = spreads.median(f"{floor}tick0_{rate}_us")
    return ("The minimal forwarder's lines are the floor of the design with a tick: one core subscription per "
            "socket, the gateway's own ticker, no validation, cursor or per-player frame. The tick takes most of "
            "the kernel's share of a delivery (one write per socket per tick instead of one per event); what is "
            "left is user-space work per copy (its read from NATS at the least), which no tick shares. Here the "
            f"floor's user time alone with the tick, {user:.1f} us, is {user / max(whole, 1e-9):.2f} of its whole "
            f"cost without ({whole:.1f} us): the floor's ratio cannot go below that, and the gateway's only with "
            "less Python work per copy than the floor's.")


def tick_rows(spreads: Rounds, prefix: str, name: str, rate: int) -> list[str]:
    """One line's medians without and with the tick, and its ratio."""
    key = f"{prefix}tick"
    return [
        f"| {name}: CPU per delivery without / with the tick (us) | "
        f"{spreads.spread(f'{key}0_{rate}_us', 1)} / {spreads.spread(f'{key}{TICK_MS}_{rate}_us', 1)} |",
        f"| {name}: kernel CPU per delivery without / with the tick (us) | "
        f"{spreads.spread(f'{key}0_{rate}_system_us', 1)} / {spreads.spread(f'{key}{TICK_MS}_{rate}_system_us', 1)} |",
        f"| {name}: user CPU per delivery without / with the tick (us) | "
        f"{spreads.spread(f'{key}0_{rate}_user_us', 1)} / {spreads.spread(f'{key}{TICK_MS}_{rate}_user_us', 1)} |",
        f"| {name}: write system calls per delivery without / with the tick (/proc/PID/io syscw, NATS's included) | "
        f"{spreads.spread(f'{key}0_{rate}_writes', 3)} / {spreads.spread(f'{key}{TICK_MS}_{rate}_writes', 3)} |",
        f"| {name}: p99 without / with the tick (ms) | {spreads.spread(f'{key}0_{rate}_p99_ms', 1)} / "
        f"{spreads.spread(f'{key}{TICK_MS}_{rate}_p99_ms', 1)} |",
        f"| **{name}: CPU per delivery with the tick / without, each round's ratio** | "
        f"{spreads.spread(f'{prefix}tick_cpu_ratio_{rate}')} |"]


TICK_START, TICK_END = "<!-- bench:tick:start -->", "<!-- bench:tick:end -->"


def tick_section(spreads: Rounds, command: str) -> str:
    """docs/scaling.md's measured price and gain of the send tick, from this run's rounds only."""
    if f"tick_cpu_ratio_{LINES[-1][0]}" not in spreads.values:
        return ""
    rows = [TICK_START, f"Written by `{command}` on {time.strftime('%Y-%m-%d')}: each cell is the median of the "
            "rounds with their range (docs/benchmarks.md, \"Send tick\", has every round).", "",
            "| broadcasts | CPU per delivery, no tick / 50 ms tick (us) | with / without | "
            "of it in the kernel, no tick / tick (us) | p99, no tick / 50 ms tick (ms) |", "|---|---|---|---|---|"]
    lines = [(f"{rate}/s to {clients} clients", PREFIX["gateway"], rate) for rate, clients, _ in LINES]
    floor_rate, floor_clients, _ = LINES[-1]
    floor = PREFIX["forwarder"]
    if f"{floor}tick_cpu_ratio_{floor_rate}" in spreads.values:
        lines.append((f"{floor_rate}/s to {floor_clients} sockets of the minimal forwarder (the floor)", floor,
                      floor_rate))
    for name, prefix, rate in lines:
        key = f"{prefix}tick"
        rows.append(f"| {name} | {spreads.spread(f'{key}0_{rate}_us', 1)} / "
                    f"{spreads.spread(f'{key}{TICK_MS}_{rate}_us', 1)} | "
                    f"{spreads.spread(f'{prefix}tick_cpu_ratio_{rate}')} | "
                    f"{spreads.median(f'{key}0_{rate}_system_us'):.1f} / "
                    f"{spreads.median(f'{key}{TICK_MS}_{rate}_system_us'):.1f} | "
                    f"{spreads.spread(f'{key}0_{rate}_p99_ms', 1)} / "
                    f"{spreads.spread(f'{key}{TICK_MS}_{rate}_p99_ms', 1)} |")
    if f"tick_vs_floor_{floor_rate}" in spreads.values:
        rows += ["", f"The verdict's figure, the gateway's ratio (tick / none) over the floor's in the same rounds, "
                     f"at {floor_rate}/s: {spreads.spread(f'tick_vs_floor_{floor_rate}')} (bound 1.1)."]
    rows.append(TICK_END)
    return "\n".join(rows)


async def main(rounds: int) -> None:
    """The phase alone, printed (`python -m harness.bench.tick`)."""
    system = await LocalSystem(sync_always=False).start()
    phase, spreads, failures = Phase("send tick", "printed"), Rounds(), []  # type: ignore[var-annotated]
    try:
        await bench_tick(system, rounds, phase, spreads, failures)
    finally:
        system.stop()
    print("\n".join(phase.rows))
    print("\n".join(f"FAILED: {f}" for f in failures))


if __name__ == "__main__":
    import sys

    from harness.bench.kit import run_load
    run_load(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
