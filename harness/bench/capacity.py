"""Capacity of one gateway process, and a restart storm its sessions must all come back from."""
from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil

from harness.bench.clients import GatewayListener
from harness.bench.kit import EXPERIENCE, Run, connect_many, cpu_quiet, cpu_seconds, publish_broadcasts
from harness.report import Phase
from harness.system.local import LocalSystem
from harness.system.procs import ADMIN_HEADERS
from shared.subjects import experience_updates, live_subject

RESTART_EVENTS = 5  # published while the gateway is down: every session must replay them
LISTENING = re.compile(r"^(\S+ \S+) INFO gateway\.serve: listening on \S+, ([0-9.]+) s after the process started$",
                       re.M)


def listened(log_path: str | None) -> tuple[float, float] | None:
    """The newest start's own line (gateway/serve.py): (wall-clock time it listened, seconds from its process start).

    The harness's probe of the port runs in a process busy with 10,000 reconnecting clients and sees the
    listener late; the gateway's stamp is when it listened.
    """
    found = LISTENING.findall(Path(log_path).read_text(errors="replace")) if log_path else []
    if not found:
        return None
    stamp, started = found[-1]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), float(started)
SLOWEST = 3  # sessions named in the restart report, with what each attempt waited for


async def nats_counts(system: LocalSystem) -> tuple[int, int]:
    """(subscriptions on the experience's live subject, JetStream consumers) from NATS monitoring."""
    live = live_subject(experience_updates(EXPERIENCE))
    subs = sum(1 for s in await system.nats.subscriptions() if s == live)
    return subs, len(await system.nats.consumer_filters())


async def gateway_counters(http: aiohttp.ClientSession, gateway_url: str, names: tuple[str, ...]) -> dict[str, float]:
    """`gaia_gateway_stream_<name>_total` counters from the gateway's /metrics."""
    async with http.get(f"{gateway_url}/metrics", headers=ADMIN_HEADERS) as resp:
        text = await resp.text()
    values = {name: float("nan") for name in names}
    for line in text.splitlines():
        for name in names:
            if line.startswith(f"gaia_gateway_stream_{name}_total "):
                values[name] = float(line.split()[1])
    return values


async def bench_capacity(http: aiohttp.ClientSession, system: LocalSystem, sessions: int,
                         figures: dict[str, float], phase: Phase) -> list[GatewayListener]:
    """Connect `sessions` idle players: connect rate, memory per session in the gateway and nats-server."""
    nats_proc, _, gateway = system.server_procs()
    await cpu_quiet(system.server_procs())
    before, nats_before = gateway.memory_info().rss, nats_proc.memory_info().rss
    me, client_before = psutil.Process(), cpu_seconds(psutil.Process())
    servers_before = [cpu_seconds(p) for p in system.server_procs()]
    started = time.perf_counter()
    idle: list[GatewayListener] = []
    for start in range(0, sessions, 500):
        idle += await connect_many(http, system, f"idle{start}_", min(500, sessions - start), in_flight=250)
    elapsed = time.perf_counter() - started
    client_share = (cpu_seconds(me) - client_before) / elapsed
    # CPU per connect, by process: what the connect rate on this shared machine is made of.
    per_connect = [(cpu_seconds(p) - b) / sessions * 1000 for p, b in zip(system.server_procs(), servers_before)]
    per_connect.append((cpu_seconds(me) - client_before) / sessions * 1000)
    await cpu_quiet(system.server_procs())
    after, nats_after = gateway.memory_info().rss, nats_proc.memory_info().rss
    async with http.get(f"{system.gateway_url}/health") as resp:
        held = (await resp.json())["sessions"]["websocket"]
    subs, consumers = await nats_counts(system)
    figures.update({
        "sessions_held": held, "connects_per_s": sessions / elapsed, "consumers_per_live_session": consumers / max(held, 1),
        "gateway_kb_per_idle_session": (after - before) / sessions / 1024,
        "nats_kb_per_idle_session": (nats_after - nats_before) / sessions / 1024})
    phase.rows += [
        "| measure | value |", "|---|---|",
        f"| idle sessions held by one gateway process | {held} of {sessions} |",
        f"| core subscriptions on the live subject / JetStream consumers | {subs} / {consumers} |",
        f"| connect rate (sessions/s, each with its snapshot) | {figures['connects_per_s']:.0f} |",
        f"| client process CPU while connecting | {client_share * 100:.0f}% of a core |",
        "| CPU per connect: nats-server / kb / gateway / client (ms) | "
        + " / ".join(f"{ms:.2f}" for ms in per_connect) + " |",
        f"| gateway RSS per session (KB) | {figures['gateway_kb_per_idle_session']:.1f} |",
        f"| nats-server RSS per session (KB) | {figures['nats_kb_per_idle_session']:.2f} |",
        f"| gateway RSS total (MB) | {after / 2**20:.0f} |"]
    print(f"  capacity: {held}/{sessions} sessions, {subs} subscriptions, {consumers} consumers, "
          f"{figures['connects_per_s']:.0f} connects/s (client at {client_share * 100:.0f}%), "
          f"{figures['gateway_kb_per_idle_session']:.1f} KB/session gateway, "
          f"{figures['nats_kb_per_idle_session']:.2f} KB nats-server")
    return idle


async def bench_restart(http: aiohttp.ClientSession, system: LocalSystem, listeners: list[GatewayListener],
                        figures: dict[str, float], failures: list[str], phase: Phase, round_no: int = 0) -> None:
    """SIGTERM the gateway, publish while it is down, start it again: every session resumes, nothing lost."""
    base = round_no * 10**5  # each round's versions apart from the others'
    await publish_broadcasts(system.nats_url, 1, 1000.0, first=5 * 10**6 + base)  # every session gets a cursor
    deadline = time.monotonic() + 60
    while any(l.last_seq is None for l in listeners) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert system.gateway.proc is not None
    killed, killed_at = time.perf_counter(), time.time()
    system.gateway.proc.send_signal(signal.SIGTERM)
    await asyncio.get_running_loop().run_in_executor(None, system.gateway.proc.wait, 60)
    down = time.perf_counter()
    missed = [6 * 10**6 + base + i for i in range(RESTART_EVENTS)]
    await publish_broadcasts(system.nats_url, RESTART_EVENTS, 1000.0, first=missed[0])
    # Clients retry from here (backoff with jitter) while the new process starts.
    me, client_before = psutil.Process(), cpu_seconds(psutil.Process())
    rejoins = [asyncio.create_task(l.rejoin(time.monotonic() + 120)) for l in listeners]
    await asyncio.get_running_loop().run_in_executor(None, system.gateway.start)
    up = time.perf_counter()
    stamp = listened(system.gateway.log_path)
    listen_s, start_s = (stamp[0] - killed_at, stamp[1]) if stamp else (up - killed, float("nan"))
    results = await asyncio.gather(*rejoins, return_exceptions=True)
    resumed = [r for r in results if isinstance(r, float)]
    last = max(resumed, default=float("nan"))
    client_cpu = cpu_seconds(me) - client_before
    client_share = client_cpu / max(last - down, 1e-9)
    # The new process's whole CPU so far (its start included): with the client's, what 10,000 resumes cost
    # this machine's cores, against the time they took.
    assert system.gateway.proc is not None
    gateway_cpu = cpu_seconds(psutil.Process(system.gateway.proc.pid))
    await asyncio.sleep(1.0)
    lost = sum(1 for l in listeners for v in missed if v not in l.arrivals.by_version)
    resyncs = sum(l.resyncs for l in listeners)
    _, consumers = await nats_counts(system)
    catchups = await gateway_counters(http, system.gateway_url, ("catchups", "catchup_consumers", "direct_reads"))
    figures["restart_resumed_s"] = last - killed if len(resumed) == len(listeners) else float("inf")
    figures["restart_lost"] = float(lost)
    figures["restart_exit_s"] = down - killed
    figures["restart_listen_s"] = listen_s
    if len(resumed) < len(listeners) or lost:
        failures.append(f"restart, round {round_no + 1}: {len(resumed)} of {len(listeners)} resumed, {lost} events lost")
    phase.rows += [
        "", f"| gateway restart, round {round_no + 1} (SIGTERM, start again on the same port) | value |", "|---|---|",
        f"| sessions resumed with last_seq / dropped | {len(resumed)} / {len(listeners)} |",
        f"| events published while the gateway was down, lost / expected | {lost} / "
        f"{RESTART_EVENTS * len(listeners)} |",
        f"| resync_required instead of a replay | {resyncs} |",
        f"| SIGTERM to exit (s) | {down - killed:.1f} |",
        f"| SIGTERM to listening again, by the new process's own log line (s) | {listen_s:.1f} |",
        f"| of which the new process's start to listening (s) | {start_s:.2f} |",
        f"| SIGTERM to the harness seeing the port open (its loop busy with the clients) (s) | {up - killed:.1f} |",
        f"| SIGTERM to the last session resumed (s) | {figures['restart_resumed_s']:.1f} |",
        f"| client process CPU from the exit to the last resume | {client_share * 100:.0f}% of a core |",
        f"| CPU per resume: the new gateway process (its start included) / the client (ms) | "
        f"{gateway_cpu / max(len(resumed), 1) * 1000:.2f} / {client_cpu / max(len(resumed), 1) * 1000:.2f} |",
        f"| catch-ups in the new process / through a consumer / direct gets sent | {catchups['catchups']:.0f} / "
        f"{catchups['catchup_consumers']:.0f} / {catchups['direct_reads']:.0f} |",
        f"| catch-up consumers left afterwards | {consumers} |"]
    slowest = [l.slowest_note() for l in sorted(listeners, key=lambda l: l.rejoin_s)[-SLOWEST:]]
    phase.rows += [f"| slowest session {i + 1} (rejoin time: each attempt, what it waited for) | {note} |"
                   for i, note in enumerate(reversed(slowest))]
    print(f"  restart, round {round_no + 1}: {len(resumed)}/{len(listeners)} resumed {figures['restart_resumed_s']:.1f} s after SIGTERM "
          f"(exited after {down - killed:.1f} s, listening again after {listen_s:.1f} s; CPU per resume gateway "
          f"{gateway_cpu / max(len(resumed), 1) * 1000:.2f} ms, client {client_cpu / max(len(resumed), 1) * 1000:.2f} ms), "
          f"lost {lost}, resyncs {resyncs}, consumers left {consumers}")
    print("    slowest: " + "\n    slowest: ".join(reversed(slowest)))


async def bench_capacity_and_restart(sessions: int, run: Run, rounds: int = 3) -> None:
    """Idle sessions in one gateway process, then a gateway restart they must all resume from."""
    system = await LocalSystem(presence_announce="0").start()
    phase = run.phase(f"Capacity and restart: {sessions} idle sessions (no roster), {rounds} restarts", system,
                      "presence announcements off, so snapshots carry no roster: 10,000 joins announced to 10,000 "
                      "sessions are 50M frames (the connect phase measures snapshots with the roster, as shipped)")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            listeners = await bench_capacity(http, system, sessions, run.figures, phase)
            lost = 0.0
            for r in range(rounds):
                local: dict[str, float] = {}
                await bench_restart(http, system, listeners, local, run.failures, phase, r)
                run.rounds.add("restart_resumed_s", local["restart_resumed_s"])
                run.rounds.add("restart_exit_s", local["restart_exit_s"])
                run.rounds.add("restart_listen_s", local["restart_listen_s"])
                lost += local["restart_lost"]
            run.figures["restart_lost"] = lost
            phase.rows += ["", f"Over the {rounds} restarts, from the SIGTERM: the old process gone after "
                               f"{run.rounds.spread('restart_exit_s', 1)} s, the new one listening after "
                               f"{run.rounds.spread('restart_listen_s', 1)} s, the last session resumed after "
                               f"**{run.rounds.spread('restart_resumed_s', 1)}** s."]
            await asyncio.gather(*(l.close() for l in listeners))
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.bench.capacity`: this phase alone (its table printed; the page is `make bench`'s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    run = Run()
    asyncio.run(bench_capacity_and_restart(args.sessions, run, args.rounds))
    for phase in run.phases:
        print(f"## {phase.name}\n\nSettings: {phase.settings}\n\n" + "\n".join(phase.rows))
    for failure in run.failures:
        print(f"FAILED: {failure}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
