"""`gaia-harness narrate`: the narrator scored on a fixed script, against the local model or any endpoint.

Each round starts a fresh system (nats-server, kb, a gateway narrating with the endpoint), plays the
42 lines of harness/bench/narratelines.py one at a time as one player (successes, refusals, moves,
inventory, talk, free-form lines), then `--players` players who each say one line at the same moment.
Every told story is scored by code (narratelines.score): contradictions, leaks, stories cut without
saying so, lines off topic; chat_done says who told it (fallbacks by reason); first chunk and whole
answer are timed on the client. Verdicts are on the median of the rounds, with the range.

    gaia-harness narrate                       # SmolLM2 on llama-cpp-python's server (make llm)
    gaia-harness narrate --url https://api.example.com/v1 --model m --api-key-env MY_KEY
    gaia-harness narrate --rounds 3 --write    # the table into docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from harness.bench.narratelines import LINES, LOAD_LINES, Line, Told, score
from harness.client.ws import GaiaClient
from harness.report import machine, pct, process_settings, replace_section
from harness.rounds import Rounds
from harness.system.llmserver import ALIAS, ModelServer, missing
from harness.system.local import LocalSystem
from harness.system.procs import ADMIN_HEADERS
from shared.auth import issue_token
from shared.config import Settings

EXPERIENCE = "wylding-woods"
START, END = "<!-- bench:narrate:start -->", "<!-- bench:narrate:end -->"
DOC = Path("docs/benchmarks.md")
LOCAL_SETTINGS = {"narrator_max_inflight": "1"}  # llama.cpp's server answers one request at a time
# figure -> (what it is, the bound on its median, whether lower is better)
TARGETS: dict[str, tuple[str, float | None]] = {
    "contradictions": ("stories contradicting kb's result, told to players", 0),
    "leaks": ("stories showing ids, user ids or the prompt", 0),
    "cut_unsaid": ("stories cut mid-sentence without `model_length`", 0),
    "timeouts_pct": ("fallbacks by `model_timeout`, % of chats", 10),
    "first_p50_ms": ("chat -> first chunk p50 (ms)", 1500),
    "first_p95_ms": ("chat -> first chunk p95 (ms)", None),
    "whole_p50_ms": ("chat -> chat_done p50 (ms)", None),
    "whole_p95_ms": ("chat -> chat_done p95 (ms)", None),
    "model_pct": ("stories told by the model, %", None),
    "off_topic": ("model stories not naming what the line was about", None),
    "unexpected": ("lines kb answered otherwise than the script expects", None),
    "load_first_p50_ms": ("at once: first chunk p50 (ms)", None),
    "load_first_p95_ms": ("at once: first chunk p95 (ms)", None),
    "load_whole_p95_ms": ("at once: chat_done p95 (ms)", None),
    "load_model_pct": ("at once: stories told by the model, %", None),
    "load_busy_pct": ("at once: `model_busy` (no slot in time), %", None),
    "load_timeouts_pct": ("at once: `model_timeout`, %", None),
    "load_queued_max": ("at once: most requests queued for a slot (gaia_gateway_narrator_requests_queued)", None),
}


@dataclass
class Endpoint:
    """Where stories come from: the local model (started here) or a URL."""

    url: str
    model: str
    api_key: str = field(default="", repr=False)  # from --api-key-env; never printed
    about: str = ""


@dataclass
class RoundResult:
    """One round's scored chats and its load's."""

    solo: list[Told] = field(default_factory=list)
    load: list[Told] = field(default_factory=list)
    queued_max: float = 0.0


async def say(client: GaiaClient, line: Line, conversation: str) -> Told:
    """One chat, timed on the client: first chunk and chat_done."""
    sent, first, story, done = time.perf_counter(), None, [], {}
    async for frame in client.chat(line.text, conversation_id=conversation, timeout=60):
        if frame["type"] == "chat_chunk":
            first = first or time.perf_counter()
            story.append(frame["delta"])
        else:
            done = frame
    end = time.perf_counter()
    return Told(line, "".join(story), done, ((first or end) - sent) * 1000, (end - sent) * 1000)


async def play_script(base: str, user_id: str) -> list[Told]:
    settings = Settings.from_env()
    async with GaiaClient(base, issue_token(settings, user_id), EXPERIENCE) as client:
        await client.next("area_of_interest")
        return [await say(client, line, f"{user_id}-talk") for line in LINES]


async def play_load(base: str, user_ids: list[str]) -> tuple[list[Told], float]:
    """Every player says one line at the same moment; the most requests queued meanwhile."""
    settings = Settings.from_env()
    clients = [GaiaClient(base, issue_token(settings, u), EXPERIENCE) for u in user_ids]
    for client in clients:
        await client.connect()
        await client.next("area_of_interest")
    lines = [LOAD_LINES[i % len(LOAD_LINES)] for i in range(len(clients))]
    watching = asyncio.create_task(_most_queued(base))
    try:
        told = await asyncio.gather(*(say(c, line, f"{u}-load")
                                      for c, line, u in zip(clients, lines, user_ids, strict=True)))
    finally:
        watching.cancel()
        most = await asyncio.gather(watching, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return list(told), float(most[0]) if isinstance(most[0], float) else 0.0


async def _most_queued(base: str) -> float:
    most = 0.0
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{base}/metrics", headers=ADMIN_HEADERS) as resp:
                    for row in (await resp.text()).splitlines():
                        if row.startswith("gaia_gateway_narrator_requests_queued "):
                            most = max(most, float(row.split()[-1]))
                await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        return most


async def run_round(endpoint: Endpoint, index: int, players: int, extra: dict[str, str]) -> tuple[RoundResult, str]:
    """A fresh system, the script, then the load; (the scored chats, the gateway's settings)."""
    settings = {"narrator_url": endpoint.url, "narrator_model": endpoint.model, **extra}
    if endpoint.api_key:
        settings["narrator_api_key"] = endpoint.api_key
    system = LocalSystem(**settings)
    try:
        await system.start()
        await _endpoint_checked(system.gateway_url)
        solo_user = f"evalR{index}solo"
        load_users = [f"evalR{index}p{i}" for i in range(players)]
        ids = (solo_user, *load_users)
        result = RoundResult([score(t, ids) for t in await play_script(system.gateway_url, solo_user)])
        load, result.queued_max = await play_load(system.gateway_url, load_users)
        result.load = [score(t, ids) for t in load]
        env = {k: v for k, v in {**os.environ, **system.gateway.env}.items() if k != "GAIA_NARRATOR_API_KEY"}
        return result, process_settings(env)
    finally:
        system.stop()


async def _endpoint_checked(base: str, timeout: float = 60.0) -> None:
    """Wait until the gateway has checked (and warmed) its endpoint: the script is not timed against a cold start."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{base}/health") as resp:
                status = (await resp.json()).get("narrator", {}).get("status")
            if status not in (None, "unchecked"):
                return
            await asyncio.sleep(0.2)


def figures(result: RoundResult) -> dict[str, float]:
    """One round's figures (TARGETS' names), and fallbacks by reason as `fallback:<reason>`."""
    solo, load = result.solo, result.load
    found = Counter(f for t in solo for f in t.findings)
    out = {"contradictions": found["contradiction"] + sum("contradiction" in t.findings for t in load),
           "leaks": found["leak"] + sum("leak" in t.findings for t in load),
           "cut_unsaid": found["cut"] + sum("cut" in t.findings for t in load),
           "off_topic": float(found["off_topic"]), "unexpected": float(found["unexpected"]),
           "timeouts_pct": _share(solo, "model_timeout"), "model_pct": _told_by_model(solo),
           "first_p50_ms": pct([t.first_ms for t in solo], 50), "first_p95_ms": pct([t.first_ms for t in solo], 95),
           "whole_p50_ms": pct([t.total_ms for t in solo], 50), "whole_p95_ms": pct([t.total_ms for t in solo], 95),
           "load_first_p50_ms": pct([t.first_ms for t in load], 50),
           "load_first_p95_ms": pct([t.first_ms for t in load], 95),
           "load_whole_p95_ms": pct([t.total_ms for t in load], 95), "load_model_pct": _told_by_model(load),
           "load_busy_pct": _share(load, "model_busy"), "load_timeouts_pct": _share(load, "model_timeout"),
           "load_queued_max": result.queued_max}
    for reason, n in Counter(t.done.get("reason") for t in solo if t.done.get("narrator") == "fallback").items():
        out[f"fallback:{reason}"] = float(n)
    return {k: float(v) for k, v in out.items()}


def _share(told: list[Told], reason: str) -> float:
    return 100.0 * sum(t.done.get("reason") == reason for t in told) / max(1, len(told))


def _told_by_model(told: list[Told]) -> float:
    return 100.0 * sum(t.done.get("narrator") == "model" for t in told) / max(1, len(told))


def table(rounds: Rounds, n_lines: int, players: int) -> list[str]:
    """The figures' medians with their ranges, each against its target."""
    rows = ["| figure | median (min, max, rounds) | target | |", "|---|---|---|---|"]
    for name, (about, bound) in TARGETS.items():
        if name not in rounds.values:
            continue
        digits = 0 if name.endswith("_ms") or name in ("contradictions", "leaks", "cut_unsaid") else 1
        verdict = "" if bound is None else ("met" if rounds.median(name) <= bound else "**NOT met**")
        rows.append(f"| {about} | {rounds.spread(name, digits)} | {'' if bound is None else f'<= {bound:g}'} | "
                    f"{verdict} |")
    reasons = sorted(k for k in rounds.values if k.startswith("fallback:"))
    if reasons:
        rows.append(f"| fallbacks by reason (of {n_lines} chats a round) | " + "; ".join(
            f"{k.split(':', 1)[1]} {rounds.spread(k, 0)}" for k in reasons) + " | | |")
    return rows


def examples(result: RoundResult, count: int = 8) -> list[str]:
    """A few of the first round's stories the model told, beside their lines."""
    told = [t for t in result.solo if t.done.get("narrator") == "model"][:count]
    return [f"- \"{t.line.text}\" ({'ok' if t.done.get('success') else 'refused'}): {t.story.strip()}" for t in told]


def met(rounds: Rounds) -> bool:
    return all(rounds.median(n) <= b for n, (_, b) in TARGETS.items() if b is not None and n in rounds.values)


def show(result: RoundResult) -> None:
    """Every chat of a round, as the player saw it, with its findings."""
    for told in result.solo + result.load:
        done = told.done
        print(f"  {told.first_ms:6.0f} {told.total_ms:6.0f} ms  {done.get('narrator')}/{done.get('reason') or '-'}"
              f"  {','.join(told.findings) or 'ok'}  \"{told.line.text}\" -> {told.story.strip()!r}", flush=True)


async def evaluate(endpoint: Endpoint, rounds_n: int, players: int, extra: dict[str, str],
                   verbose: bool = False) -> tuple[list[str], bool]:
    """Every round, then the section for docs/benchmarks.md and whether every target is met."""
    rounds, first, settings = Rounds(), None, ""
    for index in range(1, rounds_n + 1):
        started = time.monotonic()
        result, settings = await run_round(endpoint, index, players, extra)
        first = first or result
        if verbose:
            show(result)
        for name, value in figures(result).items():
            rounds.add(name, value)
        print(f"round {index}: {len(result.solo)} + {len(result.load)} chats in {time.monotonic() - started:.0f} s; "
              + ", ".join(f"{k} {v:g}" for k, v in figures(result).items()), flush=True)
    for name in [n for n in rounds.values if n.startswith("fallback:")]:  # a reason absent from a round is 0 there
        rounds.values[name] += [0.0] * (rounds_n - len(rounds.values[name]))
    assert first is not None
    lines = [f"## Narrator evaluation: {len(LINES)} lines one at a time, then {players} players at once", "",
             f"_From `gaia-harness narrate --rounds {rounds_n}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
             f" {machine()}._ Endpoint: {endpoint.about}. Gateway settings: {settings}.", "",
             *table(rounds, len(LINES), players), "", "Stories the model told (round 1):", "", *examples(first)]
    return lines, met(rounds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (gaia-harness narrate, python -m harness.bench.narrate)."""
    parser.add_argument("--url", help="an OpenAI-compatible base URL (default: the local model, started here)")
    parser.add_argument("--model", default="", help="the model name the endpoint serves")
    parser.add_argument("--api-key-env", default="", help="the environment variable holding the endpoint's key")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--players", type=int, default=10, help="players saying one line at the same moment")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway setting for the run (narrator_first_token_s=3); repeatable")
    parser.add_argument("--write", action="store_true", help="put the table in docs/benchmarks.md")
    parser.add_argument("--show", action="store_true", help="print every chat: line, who told it, timings, story")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write it on --write; 0 when every target is met."""
    extra = dict(item.split("=", 1) for item in args.set)
    server = None
    if args.url:
        key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
        endpoint = Endpoint(args.url, args.model or "default", key, f"{args.model or 'default'} at {args.url}")
    else:
        if lacking := missing():
            print(f"the local model is not installed ({'; '.join(lacking)}): make llm", file=sys.stderr)
            return 2
        server = ModelServer().start()
        extra = {**LOCAL_SETTINGS, **extra}
        endpoint = Endpoint(server.url, ALIAS, about=f"SmolLM2-135M-Instruct (Q4_1 GGUF) on llama-cpp-python's "
                                                     f"server, {server.threads} thread, on the same cores")
    try:
        lines, ok = asyncio.run(evaluate(endpoint, args.rounds, args.players, extra, args.show))
    finally:
        if server is not None:
            server.stop()
    print("\n".join(lines))
    if args.write:
        DOC.write_text(replace_section(DOC.read_text(), "\n".join([START, *lines, END]), START, END))
        print(f"wrote the narrator evaluation in {DOC}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaia-harness narrate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
