"""Where a connect's CPU goes: a gateway run under cProfile while fresh players connect, the profile printed
as a table per step (`python -m harness.bench.connectprofile --connects 2000`).

The gateway is the shipped one (one process, the system's settings) started beside LocalSystem's own by this
module (`--serve-profiled FILE`), which runs `gateway.__main__.main` with a profiler switched on by SIGUSR1 and
off, its file written, by SIGUSR2: only the connects are profiled (the window opens once the gateway listens
and closes when every player has its snapshot), not the start, the closes or the stop. Times are the
profiler's, inflated by it; the shares between steps are what the table is for.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from harness.bench.connect import close_all, open_many
from harness.report import process_settings
from harness.system.local import LocalSystem
from harness.system.procs import free_port, wait_for_port

ROOT = str(Path(__file__).resolve().parents[2])
STEPS = (  # (step, where its code is): matched against a function's file, first match wins
    ("edge: origin, handshake limits, token, experience", "gateway/edge/"),
    ("WebSocket upgrade and the session's reading half", "gateway/ws/handler.py"),
    ("session: open, requests, sink", "gateway/ws/session.py"),
    ("socket writes (our writer and socket)", "gateway/ws/"),
    ("snapshot from kb (the pooled client, batched per loop turn)", "gateway/kbclient.py"),
    ("presence: joins reported, renewals", "gateway/presence.py"),
    ("the stream: subscription, catch-up, verdicts", "gateway/streams/"),
    ("delivery: gate, send queue, tick", "gateway/delivery/"),
    ("the rest of the gateway", "gateway/"),
    ("JWT (PyJWT)", "/jwt/"),
    ("aiohttp (HTTP, WebSocket frames, client to kb)", "/aiohttp/"),
    ("nats-py (subscribe, flush)", "/nats/"),
    ("logging", "/logging/"),
    ("schemas (marshmallow)", "/marshmallow/"),
    ("asyncio", "/asyncio/"),
)


def step_of(filename: str) -> str:
    for name, where in STEPS:
        if where in filename:
            return name
    return "built-ins and everything else" if filename.startswith("~") or "<" in filename else "other libraries"


def table(stats_path: str, connects: int, top: int = 15) -> list[str]:
    """The profile per step (own time of every function, summed by where it lives), then the gateway's
    functions with the most cumulative time per connect."""
    stats = pstats.Stats(stats_path)
    raw = stats.stats  # type: ignore[attr-defined]
    by_step: dict[str, float] = {}
    total = 0.0
    for (filename, _, _), (_, _, own, _, _) in raw.items():
        by_step[step_of(filename)] = by_step.get(step_of(filename), 0.0) + own
        total += own
    rows = [f"CPU per connect under the profiler: {total / connects * 1e6:.0f} us ({connects} connects, the "
            "profiler's own cost included)", "", "| step | own time per connect (us) | share |", "|---|---|---|"]
    for name, own in sorted(by_step.items(), key=lambda kv: -kv[1]):
        rows.append(f"| {name} | {own / connects * 1e6:.1f} | {own / max(total, 1e-12):.1%} |")
    own_top = sorted(((own, f"{Path(f).relative_to(ROOT) if f.startswith(ROOT) else Path(f).name}:{line} {fn}")
                      for (f, line, fn), (_, _, own, _, _) in raw.items()), reverse=True)[:top]
    rows += ["", "| function (any), by own time | own time per connect (us) |", "|---|---|",
             *[f"| {name} | {own / connects * 1e6:.1f} |" for own, name in own_top]]
    ours = [(cum, f"{Path(f).relative_to(ROOT) if f.startswith(ROOT) else f}:{line} {fn}", calls)
            for (f, line, fn), (_, calls, _, cum, _) in raw.items() if f.startswith(ROOT + "/gateway/")]
    rows += ["", "| the gateway's function | calls per connect | cumulative per connect (us) |", "|---|---|---|"]
    for cum, name, calls in sorted(ours, reverse=True)[:top]:
        rows.append(f"| {name} | {calls / connects:.2f} | {cum / connects * 1e6:.1f} |")
    return rows


async def profile_connects(connects: int) -> list[str]:
    """Start the system and a profiled gateway, connect `connects` fresh players, stop, read the profile."""
    system = await LocalSystem().start()
    out = Path(tempfile.mkdtemp(prefix="gaia-profile-")) / "gateway.prof"
    port = free_port()
    env = {**os.environ, **system.gateway.env, "GAIA_GATEWAY_WORKERS": "1", "GAIA_NATS_USER": "gateway",
           "GAIA_NATS_PASSWORD": system.nats.passwords["gateway"]}
    proc = subprocess.Popen([sys.executable, "-m", "harness.bench.connectprofile", "--serve-profiled", str(out),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        await asyncio.sleep(1.0)  # the start's own work (the stream ensured, the first kb call) done first
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            proc.send_signal(signal.SIGUSR1)
            opened, seconds = await open_many(http, f"ws://127.0.0.1:{port}", "prof", connects)
            await asyncio.sleep(0.5)  # what a connect leaves behind (presence windows, batched reports) runs
            proc.send_signal(signal.SIGUSR2)
            while not out.exists():
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the file written whole
            await close_all(opened)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        system.stop()
    return [f"`python -m harness.bench.connectprofile --connects {connects}`: {connects} fresh players connected to "
            f"one profiled gateway process in {seconds:.1f} s; settings: {process_settings(system.gateway.env)}.", "",
            *table(str(out), connects)]


def serve_profiled(out: str, argv: list[str]) -> None:
    """The gateway, with a profiler that SIGUSR1 switches on and SIGUSR2 off (its file written)."""
    from gateway.__main__ import main as gateway_main
    profiler = cProfile.Profile()

    def start(*_: object) -> None:
        profiler.enable()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    gateway_main(argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--serve-profiled", metavar="FILE", help="(internal) run the gateway, profiled on signals")
    args, rest = parser.parse_known_args()
    if args.serve_profiled:
        serve_profiled(args.serve_profiled, rest)
        return
    import resource

    from harness.bench.kit import run_load
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    print("\n".join(run_load(profile_connects(args.connects))))


if __name__ == "__main__":
    main()
