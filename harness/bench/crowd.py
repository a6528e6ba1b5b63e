"""The crowded room: 1,000 players in one area, clients in several processes, the latency split by stage.

Each round one player acts (collects and drops the umbrella at the entrance, where all stand); every other
player's copy is stamped by the crowd process that reads it (harness/bench/crowdclients.py). The split
lines each event's stamps up on one machine's wall clock: the actor's send, kb's event timestamp,
the stream's stored time (`Nats-Time-Stamp` on the republished message, read by the bench's own
subscription), the gateway's arrival and first and last socket write (GET /debug/event-timings),
and the crowd's read and parse of each copy. A second line publishes changes seen by one of
`AREAS` areas' players (location visibility), so choosing who sees what is in the figures.
"""
from __future__ import annotations

import asyncio
import datetime
import os
import time
from typing import Any

import aiohttp
import nats
import orjson
import psutil

from harness.bench.clients import GatewayListener
from harness.bench.crowdclients import Copy, CrowdProcess
from harness.bench.kit import (
    EXPERIENCE,
    connect_many,
    count_missing,
    cpu_quiet,
    cpu_seconds,
    event_payload,
    toggle_item,
    ws_url,
)
from harness.report import Phase, pct, tail, tail_value
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import experience_updates, live_subject

AREAS = 3
GAP_S = 0.05


def stream_time(stamp: str) -> float:
    """`Nats-Time-Stamp` (RFC 3339, nanoseconds, UTC) as wall-clock seconds."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    return seconds + (float("0." + frac) if frac else 0.0)


class Crowd:
    """The players, spread over crowd processes, and the bench's view of the stream."""

    def __init__(self, system: LocalSystem, players: int, processes: int) -> None:
        self.system = system
        self.players = players
        self.procs = [CrowdProcess() for _ in range(processes)]
        self.names = [f"crowd{i}" for i in range(players)]
        self.stored: dict[int, float] = {}  # seq -> the stream's stored time
        self.nc: Any = None

    async def start(self) -> None:
        settings = Settings.from_env()
        urls = [ws_url(self.system, issue_token(settings, name)) for name in self.names]
        share = -(-len(urls) // len(self.procs))
        await asyncio.gather(*(p.ask("connect", urls[i * share:(i + 1) * share]) for i, p in enumerate(self.procs)))
        self.nc = await nats.connect(self.system.nats_url)

        async def stamp(msg: Any) -> None:
            headers = msg.headers or {}
            if "Nats-Sequence" in headers and "Nats-Time-Stamp" in headers:
                self.stored[int(headers["Nats-Sequence"])] = stream_time(headers["Nats-Time-Stamp"])
        await self.nc.subscribe(live_subject(experience_updates(EXPERIENCE)), cb=stamp)
        await self.nc.flush()

    async def take(self, expected: int, timeout: float = 60.0) -> list[Copy]:
        """Wait until the processes read `expected` copies (or the timeout), then take them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = await asyncio.gather(*(p.ask("count") for p in self.procs))
            if sum(counts) >= expected:
                break
            await asyncio.sleep(0.1)
        parts = await asyncio.gather(*(p.ask("take") for p in self.procs))
        return [copy for part in parts for copy in part]

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.procs if p.proc.pid is not None]

    async def stop(self) -> None:
        await asyncio.gather(*(p.ask("close") for p in self.procs), return_exceptions=True)
        for p in self.procs:
            p.stop()
        if self.nc is not None:
            await self.nc.close()


async def act_round(actor: GatewayListener, actions: int) -> dict[int, float]:
    """The umbrella at the entrance (where the crowd stands) collected and dropped in turn; {snapshot_version:
    sent at (wall clock)}; the umbrella put back."""
    return dict(await toggle_item(actor, actions, "umbrella_1", "umbrella_stand", GAP_S, clock=time.time))


async def publish_round(nats_url: str, names: list[str], events: int, first: int) -> dict[int, float]:
    """Changes each seen by the players of one area (the others get the version step), at the actions' pace."""
    by_area = [names[a::AREAS] for a in range(AREAS)]
    nc = await nats.connect(nats_url)
    sent: dict[int, float] = {}
    for i in range(events):
        version = first + i
        payload = event_payload(version, by_area[version % AREAS])
        sent[version] = time.time()
        await nc.publish(experience_updates(EXPERIENCE), payload)
        await nc.flush()
        await asyncio.sleep(GAP_S)
    await nc.close()
    return sent


async def gateway_stamps(system: LocalSystem, workers: int) -> dict[int, list[float]]:
    """seq -> [committed, received, first_write, last_write, writes] from the gateway's debug endpoint; with
    several worker processes on the port, asked on fresh connections until each answered, their stamps merged
    (the earliest arrival and first write, the latest last write, the writes summed)."""
    rows: dict[tuple[int, float], list[float]] = {}  # one row per (seq, arrival): a worker's own
    answered: set[str] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(20 * workers):
            async with http.get(f"{system.gateway_url}/debug/event-timings", headers=system.admin_headers) as resp:
                body = orjson.loads(await resp.read())
            answered.add(orjson.dumps(body["events"][:1]).decode())
            rows.update({(int(row[0]), row[2]): row[1:] for row in body["events"]})
            if len(answered) >= workers:
                break
    merged: dict[int, list[float]] = {}
    for (seq, _), (committed, received, first, last, writes) in rows.items():
        seen = merged.get(seq)
        merged[seq] = [committed, received, first, last, writes] if seen is None else [
            committed, min(seen[1], received), min(seen[2], first), max(seen[3], last), seen[4] + writes]
    return merged


def gateway_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the gateway process and its workers."""
    return cpu_seconds(proc) + sum(cpu_seconds(child) for child in proc.children())


def split_rows(label: str, sent: dict[int, float], copies: list[Copy], stored: dict[int, float],
               stamps: dict[int, list[float]], kb_stamp: bool) -> list[str]:
    """The split of one line over all its rounds: per-event stages, then per-copy totals and the client's parse."""
    seq_of = {version: seq for seq, version, _, _ in copies if version in sent}
    last_read: dict[int, float] = {}
    for seq, _, at, _ in copies:
        last_read[seq] = max(at, last_read.get(seq, 0.0))
    stages: dict[str, list[float]] = {k: [] for k in ("kb", "stream", "gateway_in", "first", "last", "socket",
                                                      "server")}
    for version, at in sent.items():
        seq = seq_of.get(version)
        if seq is None or seq not in stamps or seq not in stored:
            continue
        committed, received, first, last, _ = stamps[seq]
        start = committed if kb_stamp else at
        if kb_stamp:
            stages["kb"].append(committed - at)
        stages["stream"].append(stored[seq] - start)
        stages["gateway_in"].append(received - stored[seq])
        stages["first"].append(first - received)
        stages["last"].append(last - received)
        stages["socket"].append(last_read[seq] - last)
        stages["server"].append(last - at)
    totals = [at - sent[version] for _, version, at, _ in copies if version in sent]
    parses = [p for _, version, _, p in copies if version in sent]
    names = [("kb", "action sent -> kb's event stamp (the gateway's call, the rule, the commit)"),
             ("stream", "kb's stamp -> stored in the stream" if kb_stamp else "published -> stored in the stream"),
             ("gateway_in", "stored -> the gateway's first copy of the message"),
             ("first", "gateway arrival -> first socket write"),
             ("last", "gateway arrival -> last socket write (every copy handed to its socket)"),
             ("socket", "last socket write -> last copy read by a crowd process (below 0: the actor's own socket, "
                        "outside the crowd, was written last)"),
             ("server", "sent -> last socket write (the server's whole share)")]
    # A tail is a p99 only from 1,000 samples or more; per-event stages have 60 or so: their maximum, labelled.
    rows = [f"| {label}: {about} | {pct(stages[k], 50) * 1000:.1f} | {tail([v * 1000 for v in stages[k]])} | "
            f"{len(stages[k])} events |" for k, about in names if stages[k]]
    rows.append(f"| {label}: sent -> each copy read (before its parse) | {pct(totals, 50) * 1000:.1f} | "
                f"{tail([v * 1000 for v in totals])} | {len(totals)} copies |")
    rows.append(f"| {label}: the client's own parse of one copy (us, apart from the above) | "
                f"{pct(parses, 50) * 1e6:.0f} us | {tail([v * 1e6 for v in parses])} us | {len(parses)} copies |")
    return rows


async def bench_crowd(system: LocalSystem, players: int, actions: int, rounds: int, phase: Phase,
                      spreads: Rounds, latency: dict[int, list[float]], failures: list[str], workers: int = 1,
                      prefix: str = "crowd") -> None:
    """Rounds of the two lines, interleaved; each round's p99 kept, the split table over all rounds."""
    processes = max(2, min(4, (os.cpu_count() or 2) * 2))
    crowd = Crowd(system, players, processes)
    gw = system.server_procs()[2]
    phase.rows += [f"Gateway processes on the port: {workers}. "
                   f"{players + 1} players in one area: one acts, the other {players} are read by {processes} client "
                   f"processes; the acting player acts "
                   f"{actions} times a round ({GAP_S * 1000:.0f} ms apart); {rounds} rounds, lines interleaved.", "",
                   "| round, line | copies | p50 (ms) | p99 (ms) | gateway CPU per copy (us) | client processes' "
                   "CPU (share of a core) |", "|---|---|---|---|---|---|"]
    kept: dict[str, dict[str, Any]] = {k: {"sent": {}, "copies": []} for k in ("action", "audience")}
    try:
        began = time.monotonic()
        await crowd.start()
        print(f"  crowd: {players} players connected in {time.monotonic() - began:.1f} s")
        children = [psutil.Process(pid) for pid in crowd.pids()]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            actor = (await connect_many(http, system, "crowdactor", 1))[0]
            for r in range(rounds):
                for line in ("action", "audience"):
                    await cpu_quiet(system.server_procs())
                    gw_before, kids_before, started = gateway_cpu(gw), sum(map(cpu_seconds, children)), time.time()
                    if line == "action":
                        sent = await act_round(actor, actions)
                    else:
                        sent = await publish_round(system.nats_url, crowd.names, actions, (10 + r) * 10**6)
                    copies = await crowd.take(len(sent) * players)
                    copies = [c for c in copies if c[1] in sent]
                    count_missing(failures, f"crowd, {line}, round {r + 1}", len(sent) * players,
                                  len(sent) * players - len(copies))
                    gw_used, kids_used = gateway_cpu(gw) - gw_before, sum(map(cpu_seconds, children)) - kids_before
                    totals = [(at - sent[v]) * 1000 for _, v, at, _ in copies]
                    figure = f"{prefix}_p99_ms" if line == "action" else f"{prefix}_audience_p99_ms"
                    spreads.add(figure, tail_value(totals))
                    kept[line]["sent"].update(sent)
                    kept[line]["copies"] += copies
                    name = "action, one area" if line == "action" else f"per-player audiences, {AREAS} areas"
                    phase.rows.append(f"| {r + 1}: {name} | "
                                      f"{len(copies)} | {pct(totals, 50):.1f} | {tail_value(totals):.1f} | "
                                      f"{gw_used / max(len(copies), 1) * 1e6:.1f} | "
                                      f"{kids_used / max(time.time() - started, 1e-9):.2f} |")
                    print(f"  crowd round {r + 1}, {line}: p50 {pct(totals, 50):.1f} ms, "
                          f"p99 {tail_value(totals):.1f} ms ({len(copies)} copies)")
            stamps = await gateway_stamps(system, workers)
            await actor.close()
        latency[players + 1] = [(at - kept["action"]["sent"][v]) * 1000 for _, v, at, _ in kept["action"]["copies"]]
        phase.rows += ["", "The split, all rounds (wall clock of one machine; the stream's stamp from nats-server, "
                           "the gateway's from GET /debug/event-timings):", "",
                       "| line: stage | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
        phase.rows += split_rows("action", kept["action"]["sent"], kept["action"]["copies"], crowd.stored, stamps,
                                 True)
        phase.rows += split_rows(f"audiences ({AREAS} areas)", kept["audience"]["sent"], kept["audience"]["copies"],
                                 crowd.stored, stamps, False)
        phase.rows += ["", f"p99 of the other players' copies, each round's: **{spreads.spread(f'{prefix}_p99_ms', 1)}"
                           f"** ms; with per-player audiences: {spreads.spread(f'{prefix}_audience_p99_ms', 1)} ms."]
    finally:
        await crowd.stop()


async def main(players: int, actions: int, rounds: int, env: dict[str, str]) -> None:
    """The phase alone, printed (`python -m harness.bench.crowd`); `make bench` writes it to docs/benchmarks.md."""
    system = await LocalSystem(**env).start()
    phase, spreads, failures = Phase("crowd", str(env)), Rounds(), []  # type: ignore[var-annotated]
    try:
        await bench_crowd(system, players - 1, actions, rounds, phase, spreads, {}, failures,
                          int(env.get("gateway_workers", "1")))
    finally:
        system.stop()
    print("\n".join(phase.rows))
    print("\n".join(f"FAILED: {f}" for f in failures))


if __name__ == "__main__":
    import argparse
    import resource

    from harness.bench.kit import run_load
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway and kb (GAIA_ prefix "
                                                                   "left off: send_tick_ms=50)")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    run_load(main(args.players, args.actions, args.rounds, dict(e.split("=", 1) for e in args.env)))
