"""`python -m harness.checks.hostile`: other players' ping while two hostile sockets attack the gateway.

Issue 38's measure: one socket floods empty continuation frames of a message that never ends, the
other floods WebSocket pings; each reconnects as soon as it is closed (within the shipped handshake
budget of its address) and floods again. Meanwhile N players play (an action a second each, so
events flow to everyone) and ping the gateway ten times a second. Each round starts a fresh system
(nats-server, kb, one gateway process with the shipped limits), measures the players' ping round
trips for S seconds idle, then S seconds attacked; the page shows each round and the medians over
the rounds with their range. It exits 1 unless the attacked p99 is within 2x the idle p99 (the
median of the rounds' ratios). `--write` puts the figures in docs/security.md.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from harness.client.rawws import CONTINUATION, PING, TEXT, RawSocket, frame
from harness.client.ws import GaiaClient
from harness.report import machine, pct, replace_section
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings

EXPERIENCE = "wylding-woods"
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
START, END = "<!-- hostile:start -->", "<!-- hostile:end -->"
TARGET_RATIO = 2.0
FLOODS = {  # one write of each attacker: 10,000 frames (the first opens the message that never ends)
    "continuation": frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"", fin=False) * 10_000,
    "ping": frame(PING, b"") * 10_000,
}
# The shipped per-address limits: one machine plays everyone here, so the players' own handshakes
# must fit the burst; the attackers then reconnect at the shipped rate (20/s for the address).
SHIPPED_EDGE = {"handshakes_per_ip_per_s": str(Settings().handshakes_per_ip_per_s),
                "handshake_burst": str(Settings().handshake_burst),
                "max_connections_per_address": str(Settings().max_connections_per_address)}


async def attacker(url: str, kind: str, stop: asyncio.Event, stats: Counter[str]) -> None:
    """Flood until closed, reconnect, flood again, until told to stop (a user of its own each time, so no
    per-user limit slows it down)."""
    settings = Settings.from_env()
    while not stop.is_set():
        try:
            sock = await RawSocket.open(url, issue_token(settings, f"hostile-{kind}-{stats['connections']}"),
                                        EXPERIENCE)
        except (ConnectionError, OSError):  # 429: the address's handshake budget; try again shortly
            stats["refused"] += 1
            await asyncio.sleep(0.05)
            continue
        stats["connections"] += 1
        code = asyncio.create_task(sock.close_code())
        try:
            while not code.done() and not stop.is_set():
                await asyncio.wait_for(sock.send(FLOODS[kind]), 2.0)
                stats["frames"] += 10_000
        except (ConnectionError, asyncio.TimeoutError):
            pass
        with contextlib.suppress(asyncio.TimeoutError):
            stats[f"closed {await asyncio.wait_for(code, 2.0)}"] += 1
        code.cancel()
        sock.abort()


async def player(client: GaiaClient, stop: asyncio.Event, rtts: list[float], act_every: float, index: int) -> None:
    """Ping ten times a second; move between two rooms every `act_every` seconds (events for everyone)."""
    places = ("main_room", "entrance")
    next_act = time.monotonic() + act_every * index / 20
    moves = 0
    while not stop.is_set():
        rtts.append(await client.ping(timeout=10))
        if act_every and time.monotonic() >= next_act:
            next_act += act_every
            moves += 1
            asyncio.ensure_future(client.act("go", destination=places[moves % 2]))
        await asyncio.sleep(0.1)


async def phase(clients: list[GaiaClient], seconds: float, act_every: float) -> list[float]:
    """Every player pings for `seconds`; their round trips (ms)."""
    stop, rtts = asyncio.Event(), []  # type: ignore[var-annotated]
    tasks = [asyncio.create_task(player(c, stop, rtts, act_every, i)) for i, c in enumerate(clients)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rtts


async def attack(url: str, seconds: float) -> dict[str, int]:
    """Both attackers for `seconds` (the `--attack` mode, in a process of its own)."""
    stop, stats = asyncio.Event(), Counter()  # type: ignore[var-annotated]
    floods = [asyncio.create_task(attacker(url, kind, stop, stats)) for kind in FLOODS]
    print("attacking", flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*floods, return_exceptions=True)
    return dict(stats)


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def one_round(players: int, seconds: float, act_every: float) -> dict[str, Any]:
    system = await LocalSystem(**SHIPPED_EDGE).start()
    try:
        gateway = system.server_procs()[2]
        settings = Settings.from_env()
        clients = [GaiaClient(system.gateway_url, issue_token(settings, f"player{i}"), EXPERIENCE)
                   for i in range(players)]
        for client in clients:
            await client.connect()
            await client.next("area_of_interest")
        await phase(clients, 2.0, act_every)  # warm: every path has run
        before = cpu(gateway)
        idle = await phase(clients, seconds, act_every)
        idle_cpu = (cpu(gateway) - before) / seconds
        # The attackers run in a process of their own: their floods must not slow the players' own loop.
        floods = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.checks.hostile", "--attack", system.gateway_url,
            "--seconds", str(seconds + 1.0), stdout=asyncio.subprocess.PIPE)
        assert floods.stdout is not None
        await floods.stdout.readline()  # "attacking"
        before = cpu(gateway)
        attacked = await phase(clients, seconds, act_every)
        attacked_cpu = (cpu(gateway) - before) / seconds
        stats = json.loads((await floods.communicate())[0])
        for client in clients:
            await client.close()
        return {"idle": idle, "attacked": attacked, "idle_cpu": idle_cpu, "attacked_cpu": attacked_cpu,
                "stats": stats}
    finally:
        system.stop()


def lines(results: list[dict[str, Any]], rounds: Rounds, players: int, seconds: float, act_every: float,
          command: str) -> list[str]:
    out = [f"Last run: `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}; every process on this one machine.",
           "",
           f"- {players} players, each pinging ten times a second and moving every {act_every:g} s; {seconds:g} s "
           "idle, then as long under attack, per round; a fresh system (one gateway process, shipped limits) "
           "each round",
           "- the attackers: one floods empty continuation frames of a message that never ends, one floods "
           "WebSocket pings (10,000 frames a write); each reconnects at once when closed",
           "",
           "| round | ping p50 idle / attacked (ms) | ping p99 idle / attacked (ms) | p99 ratio | gateway CPU idle / "
           "attacked (cores) | attacker connections (refused 429) | closes | frames the attackers wrote (most never "
           "read) |",
           "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        stats = r["stats"]
        closes = ", ".join(f"{k.split()[1]} x{v}" for k, v in sorted(stats.items()) if k.startswith("closed"))
        ratio = pct(r['attacked'], 99) / pct(r['idle'], 99)
        out.append(f"| {i} | {pct(r['idle'], 50):.1f} / {pct(r['attacked'], 50):.1f} | "
                   f"{pct(r['idle'], 99):.1f} / {pct(r['attacked'], 99):.1f} | "
                   f"{ratio:.2f} | {r['idle_cpu']:.2f} / {r['attacked_cpu']:.2f} | "
                   f"{stats.get('connections', 0)} ({stats.get('refused', 0)}) | {closes or 'none'} | "
                   f"{stats.get('frames', 0):,} |")
    ratio = rounds.median("p99 ratio")
    out += ["", f"Medians over the rounds (min, max): ping p50 idle {rounds.spread('idle p50', 1)}, attacked "
                f"{rounds.spread('attacked p50', 1)} ms; p99 idle {rounds.spread('idle p99', 1)}, attacked "
                f"{rounds.spread('attacked p99', 1)} ms; p99 ratio {rounds.spread('p99 ratio')}.",
            "",
            f"Verdict: attacked p99 within {TARGET_RATIO:g}x idle: {'met' if ratio <= TARGET_RATIO else 'NOT met'}."]
    return out


def run(rounds_n: int, players: int, seconds: float, act_every: float, write: bool, command: str) -> int:
    results: list[dict[str, Any]] = []
    rounds = Rounds()
    for n in range(rounds_n):
        result = asyncio.run(one_round(players, seconds, act_every))
        results.append(result)
        for name in ("idle", "attacked"):
            rounds.add(f"{name} p50", pct(result[name], 50))
            rounds.add(f"{name} p99", pct(result[name], 99))
        rounds.add("p99 ratio", pct(result["attacked"], 99) / pct(result["idle"], 99))
        print(f"round {n + 1}: p99 idle {pct(result['idle'], 99):.1f} ms, attacked {pct(result['attacked'], 99):.1f} "
              f"ms; {result['stats']}", flush=True)
    page = lines(results, rounds, players, seconds, act_every, command)
    print("\n".join(page))
    if write:
        DOC.write_text(replace_section(DOC.read_text(), "\n".join([START, *page, END]), START, END))
    return 0 if rounds.median("p99 ratio") <= TARGET_RATIO else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.checks.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--players", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="idle, then as long attacked, per round")
    parser.add_argument("--act-every", type=float, default=1.0, help="seconds between one player's moves (0: none)")
    parser.add_argument("--write", action="store_true", help="put the figures in docs/security.md")
    parser.add_argument("--attack", metavar="GATEWAY_URL", help=argparse.SUPPRESS)  # the attackers' own process
    args = parser.parse_args(argv)
    if args.attack:
        print(json.dumps(asyncio.run(attack(args.attack, args.seconds))), flush=True)
        return 0
    command = "python -m harness.checks.hostile " + " ".join(argv if argv is not None else sys.argv[1:])
    return run(args.rounds, args.players, args.seconds, args.act_every, args.write, command.strip())


if __name__ == "__main__":
    sys.exit(main())
