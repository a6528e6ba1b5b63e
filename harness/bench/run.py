"""`gaia-harness bench`: latency, fan-out CPU against the floor and nats-server's own listener, capacity.

Every figure it prints and writes is measured in this run; verdicts come from `harness/report.py`.
"""
from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

from harness.bench.capacity import bench_capacity_and_restart
from harness.bench.chat import bench_chat
from harness.bench.clients import SseListener
from harness.bench.cluster import bench_cluster_restart
from harness.bench.connect import bench_connect_floor
from harness.bench.connectprofile import profile_connects
from harness.bench.crowd import bench_crowd
from harness.bench.fanout import bench_fanout, bench_fanout_fsync
from harness.bench.gameroom import bench_game_room
from harness.bench.kb import WORKERS, bench_kb_stores
from harness.bench.kit import (
    EXPERIENCE,
    Run,
    all_arrived,
    connect_many,
    cpu_quiet,
    drive_actions,
    event_payload,
    latencies,
    latency_row,
    run_load,
)
from harness.bench.tick import TICK_END, TICK_START, bench_tick, tick_section
from harness.report import (
    SCALING_END,
    SCALING_START,
    Phase,
    all_met,
    machine,
    pct,
    render,
    replace_section,
    scaling_section,
    tail,
    tail_value,
    verdict_rows,
)
from harness.system.devstack import gateway_workers
from harness.system.local import LocalSystem
from harness.system.procs import NatsServer
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import live_subject

DOC = Path("docs/benchmarks.md")
PLOT = Path("docs/latency.png")
SCALING = Path("docs/scaling.md")
ROUNDS = 3


async def bench_latency(system: LocalSystem, players: int, actions: int, run: Run, phase: Phase) -> None:
    """Action -> the actor's own world_update and every other player's copy, in rounds, each shown."""
    procs = system.server_procs()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        listeners = await connect_many(http, system, f"lat{players}_", players)
        actor, others = listeners[0], listeners[1:]
        combined: dict[str, list[float]] = {"own": [], "others": []}
        for r in range(ROUNDS):
            await cpu_quiet(procs)
            sent = await drive_actions(actor, actions, gap_s=0.05)
            run.count_missing(f"latency, {players} players, round {r + 1}", len(sent) * players,
                              len(sent) * players - await all_arrived(sent, [l.arrivals for l in listeners]))
            own, other = latencies(sent, [actor.arrivals]), latencies(sent, [o.arrivals for o in others])
            combined["own"] += own
            combined["others"] += other
            phase.rows.append(latency_row(f"{players} players, round {r + 1}: acting player", own))
            phase.rows.append(latency_row(f"{players} players, round {r + 1}: other players", other))
        phase.rows.append(latency_row(f"**{players} players, all rounds: other players**", combined["others"]))
        run.latency[players] = combined["others"]
        run.figures[f"others_p99_{players}"] = tail_value(combined["others"])
        await asyncio.gather(*(l.close() for l in listeners))
    print(f"  latency @{players} players: others p50 {pct(combined['others'], 50):.1f} ms "
          f"{tail(combined['others'])} ms (n={len(combined['others'])}); own p50 {pct(combined['own'], 50):.1f} ms")


async def bench_transports(system: LocalSystem, watchers: int, actions: int, run: Run, phase: Phase) -> None:
    """The same actions watched over WebSocket and over the legacy SSE stream."""
    settings = Settings.from_env()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        actor = (await connect_many(http, system, "tr_actor", 1))[0]
        ws_watchers = await connect_many(http, system, "tr_ws", watchers)
        sse_url = f"{system.gateway_url}/sse/experience?experience={EXPERIENCE}"
        sse_watchers = [SseListener(http, sse_url, issue_token(settings, f"tr_sse{i}")) for i in range(watchers)]
        await asyncio.gather(*(s.start() for s in sse_watchers))
        await cpu_quiet(system.server_procs())
        sent = await drive_actions(actor, actions, gap_s=0.05)
        everyone = [w.arrivals for w in ws_watchers] + [s.arrivals for s in sse_watchers]
        run.count_missing("transports", len(sent) * len(everyone), len(sent) * len(everyone)
                          - await all_arrived(sent, everyone))
        for name, group in (("WebSocket", ws_watchers), ("SSE", sse_watchers)):
            values = latencies(sent, [w.arrivals for w in group])
            phase.rows.append(latency_row(f"action -> {watchers} watchers over {name}", values))
        await asyncio.gather(actor.close(), *(w.close() for w in ws_watchers), *(s.close() for s in sse_watchers))
    print("  transports:", "; ".join(row.split("|")[1].strip() + " p50 " + row.split("|")[2].strip()
                                       for row in phase.rows[-2:]))


async def bench_durability(count: int, run: Run) -> None:
    """JetStream publish->ack with fsync on every write versus the default flush interval."""
    phase = run.phase("JetStream publish -> ack", None, "a bare nats-server per line")
    phase.rows += ["| line | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
    for label, sync in (("sync_interval: always (shipped)", True), ("nats-server default flush", False)):
        server = NatsServer(sync_always=sync).start()
        try:
            nc = await nats.connect(server.url_as("operator"))
            js = nc.jetstream()
            await js.add_stream(name="D", subjects=["d.>"])
            samples = []
            for i in range(count):
                started = time.perf_counter()
                await js.publish("d.x", event_payload(1), headers={"Nats-Msg-Id": str(i)})
                samples.append((time.perf_counter() - started) * 1000)
            phase.rows.append(f"| {label} | {pct(samples, 50):.2f} | {tail(samples)} | {len(samples)} |")
            if sync:
                run.figures["ack_p50_fsync_ms"] = pct(samples, 50)
            await nc.close()
        finally:
            server.cleanup()


async def bench_live_path(count: int, run: Run) -> None:
    """Publish -> receive, warm and interleaved: stored and republished (what sessions hear) vs plain core."""
    phase = run.phase("Publish -> receive on one NATS connection", None,
                      "a bare nats-server with fsync per write; 50 warm-up messages per line, lines interleaved")
    phase.rows += ["| line | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url_as("operator"))
        from shared.natsconn import ensure_stream
        await ensure_stream(nc.jetstream(), Settings())
        arrived: dict[bytes, float] = {}

        async def stamp(msg: Any) -> None:
            arrived[msg.data] = time.perf_counter()
        lines = {"stored in the stream, received on the republished live subject (sessions)":
                 ("world.updates.exp.bench", live_subject("world.updates.exp.bench")), "plain core publish": ("core.bench", "core.bench")}
        for _, listen in lines.values():
            await nc.subscribe(listen, cb=stamp)
        samples: dict[str, list[float]] = {name: [] for name in lines}
        for i in range(count + 50):
            order = list(lines.items()) if i % 2 else list(reversed(lines.items()))
            for name, (subject, _) in order:
                key = f"{name[:5]}{i}".encode()
                started = time.perf_counter()
                await nc.publish(subject, key)
                while key not in arrived:
                    await asyncio.sleep(0)
                if i >= 50:
                    samples[name].append((arrived[key] - started) * 1000)
        for name, values in samples.items():
            phase.rows.append(f"| {name} | {pct(values, 50):.2f} | {tail(values)} | {len(values)} |")
        await nc.close()
    finally:
        server.cleanup()


def plot(run: Run) -> None:
    """Other players' latency percentiles against players (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    players = sorted(run.latency)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(players, [pct(run.latency[p], 50) for p in players], "-o", label="other players p50 (all rounds)")
    # p99 only where there are 1,000 samples or more, as everywhere on the page; else the maximum, said so.
    ax.plot(players, [tail_value(run.latency[p]) for p in players], "--s",
            label="other players p99 (the maximum below 1,000 samples)")
    ax.set_xscale("log")
    ax.set_xlabel("players in the experience")
    ax.set_ylabel("action -> world_update (ms)")
    ax.set_title("GAIA gateway latency (figures in benchmarks.md)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


async def run_bench(quick: bool = False, write: bool = True) -> int:
    """Run every part, print the verdicts, write docs/benchmarks.md; exit 1 on a failed phase."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    run = Run()
    sizes = {"players": [10, 50] if quick else [10, 100], "crowd": 200 if quick else 1000,
             "actions": 10 if quick else 20,
             "fanout": (50, 50) if quick else (300, 300), "idle": 300 if quick else 10000,
             "connects": 100 if quick else 500}
    rooms = [50, 100] if quick else [100, 250, 1000]  # the game-loaded room's sizes: the last is the verdict's
    print(f"benchmark on {machine()}")
    os.sync()  # what an install just wrote goes to disk now, not under the first fsync-bound phase
    system = await LocalSystem().start()
    try:
        phase = run.phase("Latency: action -> world_update", system)
        phase.rows += ["| players, round, who | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
        for players in sizes["players"]:
            await bench_latency(system, players, sizes["actions"], run, phase)
        phase = run.phase(f"The crowded room: {sizes['crowd']} players in one area, one gateway process, the latency "
                          "split by stage", system)
        await bench_crowd(system, sizes["crowd"] - 1, sizes["actions"], ROUNDS, phase, run.rounds, run.latency,
                          run.failures, prefix="crowd_one")
        if sizes["crowd"] == 1000:
            run.rounds.values["others_p99_1000"] = run.rounds.values["crowd_one_p99_ms"]
        phase = run.phase("Transports: the same actions over WebSocket and SSE", system)
        phase.rows += ["| line | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
        await bench_transports(system, 20, sizes["actions"], run, phase)
    finally:
        system.stop()
    await bench_crowd_as_shipped(sizes["crowd"], sizes["actions"], run)
    await bench_game_room(rooms, ROUNDS, 5.0 if quick else 10.0, run)
    await bench_chat(run, quick)  # the narrator: the local model, and the real-time path under narrative load
    await bench_fanout(*sizes["fanout"], 100.0, run)
    await bench_fanout_fsync(100, 100, run)
    await bench_send_tick(run)
    await bench_connect(sizes["connects"], run)
    phase = run.phase("Where a connect's CPU goes: one gateway process under cProfile", None)
    phase.rows += await profile_connects(300 if quick else 2000)
    await bench_capacity_and_restart(sizes["idle"], run, ROUNDS)
    phase = run.phase(f"Gateway restart on a 3-node NATS cluster: {sizes['idle']} idle sessions, {ROUNDS} restarts",
                      None, "harness/system/cluster.py: 3 nats-server nodes (R3 stream, fsync on every node), one kb, "
                      "one gateway")
    await bench_cluster_restart(sizes["idle"], run.figures, run.failures, phase, ROUNDS, run.rounds)
    await bench_durability(300 if quick else 500, run)
    await bench_live_path(300 if quick else 1000, run)
    kb_seconds = 2.0 if quick else 5.0
    phase = run.phase(f"kb commits per process: SQLite and PostgreSQL, fsync on, {ROUNDS} interleaved rounds", None,
                      f"{WORKERS} players walking through kb's HTTP API at once, one world; a warm-up second, "
                      f"then {kb_seconds:g} s timed; the world seeded with its players ever, all seen just now")
    await bench_kb_stores(run.figures, phase.rows, seconds=kb_seconds, rounds=ROUNDS, spreads=run.rounds)
    run.close_phase()
    run.figures["missing_deliveries"] = float(run.missing)
    for figure in ("cpu_vs_forwarder", "cpu_vs_forwarder_20", "connect_cpu_vs_floor", "restart_resumed_s",
                   "restart_exit_s", "others_p99_1000", "crowd_p99_ms", "tick_vs_floor_1000"):
        if figure in run.rounds.values:
            run.figures[figure] = run.rounds.median(figure)
    seconds = time.monotonic() - started
    command = "gaia-harness bench" + (" --quick" if quick else "")
    print(f"done in {seconds:.0f} s")
    unquiet = {f for p in run.phases if p.unquiet for f in p.figures}
    print("\n".join(verdict_rows(run.figures, run.rounds, unquiet)))
    for failure in run.failures:
        print(f"FAILED: {failure}")
    if write:
        DOC.write_text(render(run.phases, run.figures, command, seconds, run.failures, PLOT.name, run.rounds))
        plot(run)
        if section := scaling_section(run.figures, command):
            SCALING.write_text(replace_section(SCALING.read_text(), section, SCALING_START, SCALING_END))
        if section := tick_section(run.rounds, command):
            SCALING.write_text(replace_section(SCALING.read_text(), section, TICK_START, TICK_END))
        print(f"wrote {DOC}, {PLOT} and the measured section of {SCALING}")
    if not all_met(run.figures):
        print("not every target is met (see the verdicts): exit 1")
    return 1 if run.failures or not all_met(run.figures) else 0


async def bench_crowd_as_shipped(players: int, actions: int, run: Run) -> None:
    """The crowded room as `make run` and deploy/ ship the gateway: one process per core on its port."""
    workers = gateway_workers()
    system = await LocalSystem(gateway_workers=str(workers)).start()
    phase = run.phase(f"The crowded room as shipped: {players} players in one area, {workers} gateway processes on "
                      "the port (one per core), the latency split by stage", system)
    try:
        await bench_crowd(system, players - 1, actions, ROUNDS, phase, run.rounds, {}, run.failures, workers)
    finally:
        system.stop()


async def bench_send_tick(run: Run) -> None:
    """Gateway CPU per delivery and latency with a 50 ms send tick and without, in interleaved rounds."""
    system = await LocalSystem(sync_always=False).start()
    phase = run.phase(f"Send tick: a gateway with GAIA_SEND_TICK_MS=50 beside one without, {ROUNDS} interleaved "
                      "rounds", system, "the second gateway's only difference: GAIA_SEND_TICK_MS=50")
    try:
        await bench_tick(system, ROUNDS, phase, run.rounds, run.failures)
    finally:
        system.stop()


async def bench_connect(per_round: int, run: Run) -> None:
    """The gateway's CPU per connect against the handshake floor, in interleaved rounds, shipped settings."""
    phase = run.phase(f"Connects: our gateway and the handshake floor, {per_round} fresh players each, "
                      f"{ROUNDS} interleaved rounds", None)
    await bench_connect_floor(ROUNDS, per_round, phase, run.rounds)
    phase.rows += ["", f"Gateway CPU per connect / the floor's, each round's ratio: "
                       f"**{run.rounds.spread('connect_cpu_vs_floor')}**; connect rates (sessions/s, the client "
                       f"included on this machine): gateway {run.rounds.spread('gateway_connects_per_s', 0)}, floor "
                       f"{run.rounds.spread('floor_connects_per_s', 0)}."]
    print(f"  connect CPU gateway/floor: {run.rounds.spread('connect_cpu_vs_floor')}")


if __name__ == "__main__":
    sys.exit(run_load(run_bench(quick="--quick" in sys.argv)))
