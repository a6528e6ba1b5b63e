"""The send tick's price and gain: gateway CPU per delivery and latency with GAIA_SEND_TICK_MS=50 and without.

Two gateways on one nats-server and kb, the second with the tick; each line connects its clients to
one of them and publishes broadcasts at a steady rate, so the only difference is the tick. Lines
alternate round after round (100 and 1,000 events/s, tick off and on).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import psutil

from harness.benchclients import GatewayListener
from harness.benchkit import EXPERIENCE, cpu_quiet, publish_broadcasts, wait_all
from harness.benchreport import Phase, pct, tail_value
from harness.benchrounds import Rounds
from harness.procs import ServiceProcess, free_port
from harness.system import LocalSystem
from shared.auth import issue_token
from shared.config import Settings

TICK_MS = 50
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


async def bench_tick(system: LocalSystem, rounds: int, phase: Phase, spreads: Rounds, failures: list[str]) -> None:
    """Rounds of every line; each round's CPU ratio (tick on / off) at each rate kept for the verdicts."""
    ticked = ServiceProcess("gateway", free_port(), {**system.gateway.env, "GAIA_SEND_TICK_MS": str(TICK_MS)},
                            log_path=str(Path(system.work) / "gateway-tick.log"),
                            nats_password=system.nats.passwords["gateway"]).start()
    gateways = {0: (system.gateway_url, system.server_procs()[2]),
                TICK_MS: (ticked.url, psutil.Process(ticked.proc.pid))}  # type: ignore[union-attr]
    phase.rows += ["| round, line | delivered/expected | gateway CPU per delivery (us) | of it, user / kernel (us) | "
                   "p50 (ms) | p99 (ms) |", "|---|---|---|---|---|---|"]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for r in range(rounds):
                per: dict[tuple[int, int], float] = {}
                for rate, clients, seconds in LINES:
                    for tick in (0, TICK_MS):
                        base, gw = gateways[tick]
                        listeners = await connect_to(http, base, f"tick{tick}r{rate}_", clients)
                        await cpu_quiet([gw, *system.server_procs()])
                        count = int(rate * seconds)
                        before = gw.cpu_times()
                        sent = await publish_paced(system.nats_url, count, rate, (50 + 10 * r) * 10**6 + rate * 1000
                                                   + tick)
                        got = await wait_all(listeners, clients * count, timeout=30 + seconds)
                        after = gw.cpu_times()
                        user, kernel = after.user - before.user, after.system - before.system
                        used = user + kernel
                        waits = [(got_at.by_version[v] - at) * 1000 for got_at in (x.arrivals for x in listeners)
                                 for v, at in sent.items() if v in got_at.by_version]
                        await asyncio.gather(*(listener.close() for listener in listeners))
                        if got < clients * count:
                            failures.append(f"send tick, {rate}/s, tick {tick}: delivered {got} of {clients * count}")
                        us = used / max(got, 1) * 1e6
                        per[(rate, tick)] = us
                        spreads.add(f"tick{tick}_{rate}_us", us)
                        spreads.add(f"tick{tick}_{rate}_user_us", user / max(got, 1) * 1e6)
                        spreads.add(f"tick{tick}_{rate}_system_us", kernel / max(got, 1) * 1e6)
                        spreads.add(f"tick{tick}_{rate}_p99_ms", tail_value(waits))
                        label = f"{rate} events/s to {clients} clients, " + (f"send tick {tick} ms" if tick else
                                                                             "no tick")
                        phase.rows.append(f"| {r + 1}: {label} | {got}/{clients * count} | {us:.1f} | "
                                          f"{user / max(got, 1) * 1e6:.1f} / {kernel / max(got, 1) * 1e6:.1f} | "
                                          f"{pct(waits, 50):.1f} | {tail_value(waits):.1f} |")
                        print(f"  send tick, round {r + 1}, {label}: {us:.1f} us/delivery, "
                              f"p99 {tail_value(waits):.1f} ms")
                for rate, _, _ in LINES:
                    spreads.add(f"tick_cpu_ratio_{rate}", per[(rate, TICK_MS)] / max(per[(rate, 0)], 1e-9))
        phase.rows += ["", "| per round, then the median (min, max) | value |", "|---|---|"]
        for rate, _, _ in LINES:
            phase.rows += [
                f"| {rate} events/s: gateway CPU per delivery without / with the tick (us) | "
                f"{spreads.spread(f'tick0_{rate}_us', 1)} / {spreads.spread(f'tick{TICK_MS}_{rate}_us', 1)} |",
                f"| {rate} events/s: kernel CPU per delivery without / with the tick (us) | "
                f"{spreads.spread(f'tick0_{rate}_system_us', 1)} / "
                f"{spreads.spread(f'tick{TICK_MS}_{rate}_system_us', 1)} |",
                f"| {rate} events/s: user CPU per delivery without / with the tick (us) | "
                f"{spreads.spread(f'tick0_{rate}_user_us', 1)} / {spreads.spread(f'tick{TICK_MS}_{rate}_user_us', 1)} |",
                f"| {rate} events/s: p99 without / with the tick (ms) | {spreads.spread(f'tick0_{rate}_p99_ms', 1)} / "
                f"{spreads.spread(f'tick{TICK_MS}_{rate}_p99_ms', 1)} |",
                f"| **{rate} events/s: CPU per delivery with the tick / without, each round's ratio** | "
                f"{spreads.spread(f'tick_cpu_ratio_{rate}')} |"]
    finally:
        ticked.stop()


TICK_START, TICK_END = "<!-- bench:tick:start -->", "<!-- bench:tick:end -->"


def tick_section(spreads: Rounds, command: str) -> str:
    """docs/scaling.md's measured price and gain of the send tick, from this run's rounds only."""
    if f"tick_cpu_ratio_{LINES[-1][0]}" not in spreads.values:
        return ""
    rows = [TICK_START, f"Written by `{command}` on {time.strftime('%Y-%m-%d')}: each cell is the median of the "
            "rounds with their range (docs/benchmarks.md, \"Send tick\", has every round).", "",
            "| broadcasts | gateway CPU per delivery, no tick / 50 ms tick (us) | with / without | "
            "of it in the kernel, no tick / tick (us) | p99, no tick / 50 ms tick (ms) |", "|---|---|---|---|---|"]
    for rate, clients, _ in LINES:
        rows.append(f"| {rate}/s to {clients} clients | {spreads.spread(f'tick0_{rate}_us', 1)} / "
                    f"{spreads.spread(f'tick{TICK_MS}_{rate}_us', 1)} | {spreads.spread(f'tick_cpu_ratio_{rate}')} | "
                    f"{spreads.median(f'tick0_{rate}_system_us'):.1f} / "
                    f"{spreads.median(f'tick{TICK_MS}_{rate}_system_us'):.1f} | "
                    f"{spreads.spread(f'tick0_{rate}_p99_ms', 1)} / "
                    f"{spreads.spread(f'tick{TICK_MS}_{rate}_p99_ms', 1)} |")
    rows.append(TICK_END)
    return "\n".join(rows)


async def main(rounds: int) -> None:
    """The phase alone, printed (`python -m harness.benchtick`)."""
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

    from harness.benchkit import run_load
    run_load(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
