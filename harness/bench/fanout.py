"""Fan-out: our gateway against the minimal forwarder (the floor, the gateway's own parser), nats-py's parser
and nats-server's WebSocket listener, at a few copies per message and at many, the same broadcasts each line."""
from __future__ import annotations

import asyncio
import sys
from typing import Any, Callable

import aiohttp
import psutil

from harness.bench.clients import ForwarderListener, NatsWsListener
from harness.bench.kit import (
    EXPERIENCE,
    Run,
    connect_many,
    cpu_quiet,
    cpu_seconds,
    event_payload,
    publish_broadcasts,
    wait_all,
)
from harness.system.local import LocalSystem
from harness.system.procs import free_port, stop_process, wait_for_port
from shared.subjects import experience_updates, live_subject

FANOUT_ROUNDS = 3  # the lines alternate, round after round, so a noisy moment hits all of them
AREAS = 3  # the per-audience line: players spread over this many areas, each event seen in one of them
FEW = 20  # copies per message of the small line: a room of a few players, where a parser's saving is least
FEW_SECONDS = 3.0  # the small line publishes for this long, so its deliveries are as many as the large line's


async def fanout_line(name: str, listeners: list[Any], servers: dict[str, psutil.Process], system: LocalSystem,
                      events: int, rate: float, run: Run, phase: Any, first: int,
                      make: Callable[[int], bytes] = event_payload) -> dict[str, float]:
    """One saturated fan-out to already-connected listeners: deliveries/s and CPU per delivery per process."""
    expected = len(listeners) * events
    me = psutil.Process()
    if not await cpu_quiet(list(servers.values())):
        name += " (unquiet: CPU not quiet before it)"  # kit.cpu_quiet marked the phase
    before = {k: cpu_seconds(p) for k, p in servers.items()}
    client_before = cpu_seconds(me)
    started = await publish_broadcasts(system.nats_url, events, rate, first, make)
    got = await wait_all(listeners, expected, timeout=max(60.0, 5 * events / rate))
    last = max(l.arrivals.last_at for l in listeners)
    used = {k: cpu_seconds(p) - before[k] for k, p in servers.items()}
    client_share = (cpu_seconds(me) - client_before) / max(last - started, 1e-9)
    run.count_missing(f"fan-out, {name}", expected, got)
    per = {k: v / max(got, 1) * 1e6 for k, v in used.items()}
    cpu_cells = ", ".join(f"{k} {v:.1f}" for k, v in per.items())
    phase.rows.append(f"| {name} | {got}/{expected} | {got / max(last - started, 1e-9):.0f} | {cpu_cells} | "
                      f"{sum(per.values()):.1f} | {client_share * 100:.0f}% |")
    print(f"  fan-out, {name}: {got}/{expected} delivered, CPU us/delivery {cpu_cells}, "
          f"client process at {client_share * 100:.0f}% of a core")
    return {"delivered": got, "expected": expected, "total_us": sum(per.values()), **per}


def start_forwarder(system: LocalSystem, parser: str) -> tuple[psutil.Popen, int]:
    """A minimal forwarder reading with `parser`, with a gateway's NATS rights and no more: (process, port)."""
    port = free_port()
    proc = psutil.Popen([sys.executable, "-m", "harness.bench.floors.forwarder", "--port", str(port),
                         "--nats", system.nats.url_as("gateway"), "--parser", parser])
    wait_for_port(port, proc=proc)
    return proc, port


async def started(listeners: list[Any]) -> list[Any]:
    await asyncio.gather(*(l.start() for l in listeners))
    return listeners


async def bench_fanout(clients: int, events: int, rate: float, run: Run) -> None:
    """Every line at FEW copies per message and at `clients`, in turn, round after round; the gateway / floor
    ratio kept per round at both sizes."""
    system = await LocalSystem(nats_ws_port=free_port(), sync_always=False).start()
    few_events, few_rate = int(FEW_SECONDS * rate * clients / FEW), rate * clients / FEW
    phase = run.phase(f"Fan-out: {events} events offered at {rate:.0f}/s to {clients} clients, and {few_events} at "
                      f"{few_rate:.0f}/s to {FEW}, {FANOUT_ROUNDS} rounds", system)
    phase.rows += ["| round, line | delivered/expected | deliveries/s | CPU per delivery by process (us) | "
                   "servers' total (us) | client process CPU |", "|---|---|---|---|---|---|"]
    forwarders = {parser: start_forwarder(system, parser) for parser in ("copies", "nats-py")}
    used: dict[str, float] = {"gateway": 0.0, "nats-server": 0.0, "delivered": 0.0}
    by_area = [[f"fan{i}" for i in range(clients) if i % AREAS == a] for a in range(AREAS)]
    try:
        nats_proc, gw = system.server_procs()[0], system.server_procs()[2]
        fwd = {parser: psutil.Process(proc.pid) for parser, (proc, _) in forwarders.items()}
        live = live_subject(experience_updates(EXPERIENCE))

        def forwarder_line(parser: str, n: int) -> Callable[[aiohttp.ClientSession], Any]:
            port = forwarders[parser][1]
            return lambda http: started([ForwarderListener(http, f"ws://127.0.0.1:{port}/ws?subject={live}")
                                         for _ in range(n)])

        # (key, name, servers, connect, copies per message, events, rate, payloads)
        lines: list[tuple[str, str, dict[str, psutil.Process], Any, int, int, float, Callable[[int], bytes]]] = []
        for n, count, pace in ((FEW, few_events, few_rate), (clients, events, rate)):
            lines += [
                (f"gateway_{n}", f"{n} copies: our gateway (one core subscription per session)",
                 {"gateway": gw, "nats-server": nats_proc},
                 lambda http, n=n: connect_many(http, system, "fan", n), n, count, pace, event_payload),
                (f"forwarder_{n}", f"{n} copies: minimal forwarder, the floor (one core subscription per socket, "
                 "the gateway's NATS parser, bytes as they come)",
                 {"forwarder": fwd["copies"], "nats-server": nats_proc},
                 forwarder_line("copies", n), n, count, pace, event_payload),
                (f"natspy_{n}", f"{n} copies: minimal forwarder reading every copy with nats-py's own parser",
                 {"forwarder": fwd["nats-py"], "nats-server": nats_proc}, forwarder_line("nats-py", n), n, count,
                 pace, event_payload)]
        lines += [
            ("natsws", f"{clients} copies: nats-server's own WebSocket listener (NATS protocol)",
             {"nats-server": nats_proc},
             lambda http: started([NatsWsListener(http, f"ws://127.0.0.1:{system.nats.ws_port}", live, "gateway",
                                                  system.nats.passwords["gateway"]) for _ in range(clients)]),
             clients, events, rate, event_payload),
            ("audience", f"{clients} copies: our gateway, per-player audiences (location visibility: each change seen "
             f"by the players of one of {AREAS} areas, the others get the version step)",
             {"gateway": gw, "nats-server": nats_proc}, lambda http: connect_many(http, system, "fan", clients),
             clients, events, rate, lambda version: event_payload(version, by_area[version % AREAS]))]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for r in range(FANOUT_ROUNDS):
                per: dict[str, dict[str, float]] = {}
                for i, (key, name, servers, connect, _, count, pace, make) in enumerate(lines):
                    listeners = await connect(http)
                    per[key] = await fanout_line(f"{r + 1}: {name}", listeners, servers, system, count, pace, run,
                                                 phase, (20 * r + i + 1) * 10**6, make)
                    await asyncio.gather(*(l.close() for l in listeners))
                ours = per[f"gateway_{clients}"]
                for k in ("gateway", "nats-server", "delivered"):
                    used[k] += ours[k] * (ours["delivered"] if k != "delivered" else 1)
                for n in (FEW, clients):
                    suffix = "" if n == clients else f"_{n}"
                    floor = max(per[f"forwarder_{n}"]["forwarder"], 1e-9)
                    run.rounds.add(f"cpu_vs_forwarder{suffix}", per[f"gateway_{n}"]["gateway"] / floor)
                    run.rounds.add(f"gateway_us_per_delivery{suffix}", per[f"gateway_{n}"]["gateway"])
                    run.rounds.add(f"forwarder_us_per_delivery{suffix}", per[f"forwarder_{n}"]["forwarder"])
                    run.rounds.add(f"natspy_vs_copies{suffix}", per[f"natspy_{n}"]["forwarder"] / floor)
                run.rounds.add("audience_us_per_delivery", per["audience"]["gateway"])
        run.figures["gateway_us_per_delivery"] = used["gateway"] / max(used["delivered"], 1)
        run.figures["nats_us_per_delivery"] = used["nats-server"] / max(used["delivered"], 1)
        phase.rows += summary_rows(run, clients)
    finally:
        for proc, _ in forwarders.values():
            stop_process(proc)
        system.stop()


def summary_rows(run: Run, clients: int) -> list[str]:
    """The medians of the rounds at both sizes, and what the page's reader should know about them."""
    rows = ["", "| per round, then the median (min, max) | value |", "|---|---|"]
    for n in (FEW, clients):
        s = "" if n == clients else f"_{n}"
        rows += [f"| {n} copies: gateway CPU per delivery (us) | "
                 f"{run.rounds.spread(f'gateway_us_per_delivery{s}', 1)} |",
                 f"| {n} copies: the floor's CPU per delivery (us) | "
                 f"{run.rounds.spread(f'forwarder_us_per_delivery{s}', 1)} |",
                 f"| **{n} copies: gateway / floor, each round's ratio** | "
                 f"{run.rounds.spread(f'cpu_vs_forwarder{s}')} |",
                 f"| {n} copies: the forwarder with nats-py's parser / with the gateway's (what the parser saves) | "
                 f"{run.rounds.spread(f'natspy_vs_copies{s}')} |"]
    rows += [f"| {clients} copies: gateway CPU per delivery with per-player audiences (us) | "
             f"{run.rounds.spread('audience_us_per_delivery', 1)} |",
             "", "A client process near 100% of a core means that line's deliveries/s is the client's limit, not the "
                 "server's. nats-server sends one copy of each message per subscription; the gateway and the floor "
                 "both read a run of copies once (gateway/streams/natscopies.py), so the ratio is what the gateway "
                 "does per copy beyond writing its bytes. The nats-py line reads every copy as nats-py does."]
    return rows


async def bench_fanout_fsync(clients: int, events: int, run: Run) -> None:
    """Our gateway with the shipped durability (fsync on every write)."""
    system = await LocalSystem().start()
    phase = run.phase(f"Fan-out with fsync: {events} broadcasts to {clients} clients", system)
    phase.rows += ["| line | delivered/expected | deliveries/s | CPU per delivery by process (us) | "
                   "servers' total (us) | client process CPU |", "|---|---|---|---|---|---|"]
    try:
        nats_proc, _, gw = system.server_procs()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            ours = await connect_many(http, system, "fsync", clients)
            await fanout_line("our gateway, stream fsyncs every write", ours, {"gateway": gw, "nats-server": nats_proc},
                              system, events, 2000.0, run, phase, 10**6)
            await asyncio.gather(*(l.close() for l in ours))
    finally:
        system.stop()
