"""The narrator's benchmark: first chunk and whole answer with the local model, and the real-time path
under narrative load (p99 action -> other players at 100 players, 20 chats streaming against none).

Part of `gaia-harness bench` (harness/bench/run.py calls `bench_chat`); alone, `python -m harness.bench.chat
[--write]` prints the same phases and with --write puts them in docs/benchmarks.md between markers.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from harness.bench.clients import GatewayListener
from harness.bench.kit import (
    Run,
    all_arrived,
    connect_many,
    count_missing,
    cpu_quiet,
    drive_actions,
    latencies,
    latency_row,
)
from harness.client.ws import GaiaClient
from harness.report import Phase, pct, process_settings, replace_section, tail, tail_value, verdict_rows
from harness.rounds import Rounds
from harness.system.llmserver import ALIAS, ModelServer, missing
from harness.system.local import LocalSystem
from harness.system.procs import ADMIN_HEADERS, free_port, stop_process, wait_for_port
from shared.auth import issue_token
from shared.config import Settings

EXPERIENCE = "wylding-woods"
MACHINERY = ("model_timeout", "model_unavailable", "model_error", "model_auth")  # the model could not answer
BOUND = 1.2  # p99 with chats streaming / without, at most (the median of the rounds' ratios)
FIGURE = "chat_load_p99_ratio"
FIGURE_ABOUT = "action -> other players, p99 at 100 players with 20 chats streaming"  # its verdict row (benchreport)
PACE = {"first_token_s": 0.3, "tokens_per_s": 30.0, "tokens": 60}
CHAT_SPREAD_S = 1.6  # one chat's length at PACE (its story told in 1.6 s): the talkers' first chats spread over it
START, END = "<!-- bench:narrator:start -->", "<!-- bench:narrator:end -->"
DOC = Path("docs/benchmarks.md")


@dataclass
class ChatRun:
    """What the narrator benchmark produces (bench.py's Run has the same three fields)."""

    figures: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rounds: Rounds = field(default_factory=Rounds)


def _phase(run: Run, name: str, system: LocalSystem, extra: str) -> Phase:
    phase = Phase(name, process_settings({**os.environ, **system.gateway.env}) + f"; {extra}")
    run.phases.append(phase)
    return phase


async def _drive(actor: GatewayListener, actions: int) -> list[tuple[int, float]]:
    """Collect and drop the quill in turn (harness/bench/run.py's drive_actions); (version, sent_at) of each."""
    return await drive_actions(actor, actions, gap_s=0.05)


async def _chatting(client: GaiaClient, stop: asyncio.Event, counts: dict[str, int], offset_s: float) -> None:
    """One player chatting without pause until told to stop, the first chat `offset_s` after the others' start.

    Players do not chat in step: started together, 20 chats of the same length would end and start again
    together, and the phase would measure bursts of 20 chat starts in one instant, not 20 stories streaming.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), offset_s)
    while not stop.is_set():
        async for frame in client.chat("look around", timeout=30):
            if frame["type"] == "chat_done":
                counts[frame["narrator"]] = counts.get(frame["narrator"], 0) + 1


async def talk(url: str, talkers: int) -> None:
    """`--talk`: `talkers` players connected for the whole run, chatting without pause between the lines
    "talk" and "quiet" on stdin (answered "talking", then the narrators seen as JSON); "bye" ends it.

    A process of its own, so their 600 chunks/s are not read in the event loop that measures the others.
    """
    settings, clients = Settings.from_env(), []
    for i in range(talkers):
        client = GaiaClient(url, issue_token(settings, f"talker{i}"), EXPERIENCE)
        await client.connect()
        await client.next("area_of_interest")
        clients.append(client)
    print("ready", flush=True)
    stop, loops, counts = asyncio.Event(), [], {}
    while (command := (await asyncio.to_thread(sys.stdin.readline)).strip()) in ("talk", "quiet"):
        if command == "talk":
            stop, counts = asyncio.Event(), {}
            offsets = [CHAT_SPREAD_S * i / len(clients) for i in range(len(clients))]  # spread over one chat's length
            loops = [asyncio.create_task(_chatting(c, stop, counts, offset))
                     for c, offset in zip(clients, offsets, strict=True)]
            print("talking", flush=True)
        else:
            stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            print(orjson.dumps(counts).decode(), flush=True)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class Talkers:
    """The chatting players' process, driven line by line."""

    def __init__(self, url: str, talkers: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.bench.chat", "--talk", url, "--talkers",
                                      str(talkers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def say(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = (await asyncio.to_thread(self.proc.stdout.readline)).strip()
        if not answer:
            raise RuntimeError(f"the chatting players' process ended ({self.proc.wait()})")
        return answer

    async def quiet(self, counts: dict[str, int]) -> None:
        for narrator, n in orjson.loads(await self.say("quiet")).items():
            counts[narrator] = counts.get(narrator, 0) + n

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("bye\n")
            self.proc.stdin.flush()
        stop_process(self.proc)


async def _gauge(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics", headers=ADMIN_HEADERS) as resp:
            rows = (await resp.text()).splitlines()
    return next((float(r.split()[-1]) for r in rows if r.startswith(name + " ")), 0.0)


async def bench_chat_load(run: Run, players: int = 100, chatters: int = 20, actions: int = 30,
                          rounds: int = 3) -> None:
    """p99 action -> other players with `chatters` chats streaming against none, interleaved rounds, one run."""
    port = free_port()
    paced = subprocess.Popen([sys.executable, "-m", "harness.bench.floors.pacedllm", "--port", str(port),
                              "--first-token-s", str(PACE["first_token_s"]),
                              "--tokens-per-s", str(PACE["tokens_per_s"]), "--tokens", str(PACE["tokens"])])
    # Whole answers (no sentence limit): the load is 20 stories streaming for seconds each.
    system = LocalSystem(narrator_url=f"http://127.0.0.1:{port}/v1", narrator_model="paced", narrator_sentences="0")
    try:
        wait_for_port(port, proc=paced)
        await system.start()
        phase = _phase(run, f"Narrative load: action -> other players at {players} players, {chatters} chats "
                            f"streaming against none", system,
                       f"narrator: a paced stand-in OpenAI-compatible server (harness/bench/floors/pacedllm.py: first token after "
                       f"{PACE['first_token_s'] * 1000:.0f} ms, then {PACE['tokens_per_s']:.0f} tokens/s, "
                       f"{PACE['tokens']} tokens), not a model: a real model's CPU on these two cores would swamp "
                       f"the figure")
        phase.rows += ["| round, load | p50 (ms) | tail (ms) | n |", "|---|---|---|---|"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            listeners = await connect_many(http, system, "nl", players - chatters)
            talkers = Talkers(system.gateway_url, chatters)  # the other `chatters` players, a process of their own
            assert await talkers.say("") == "ready"
            actor, others = listeners[0], listeners[1:]
            by_load: dict[str, list[float]] = {"none": [], "chats": []}
            counts: dict[str, int] = {}
            rounds_of: Rounds = getattr(run, "rounds", None) or Rounds()  # bench.py's Run has one
            for r in range(rounds):
                this_round: dict[str, float] = {}
                for load in ("none", "chats"):
                    await cpu_quiet(system.server_procs())
                    if load == "chats":
                        assert await talkers.say("talk") == "talking"
                        deadline = time.monotonic() + 10  # streaming: most chats are inside their answer
                        while (await _gauge(system.gateway_url, "gaia_gateway_narrator_requests_in_flight")
                               < chatters * 0.8 and time.monotonic() < deadline):
                            await asyncio.sleep(0.05)
                    sent = await _drive(actor, actions)
                    count_missing(run.failures, f"narrative load, round {r + 1} ({load})", len(sent) * len(others),
                                  await all_arrived(sent, [o.arrivals for o in others]))
                    values = latencies(sent, [o.arrivals for o in others])
                    by_load[load] += values
                    this_round[load] = tail_value(values)
                    phase.rows.append(latency_row(f"round {r + 1}, {load if load == 'none' else f'{chatters} chats'}",
                                                  values))
                    if load == "chats":
                        await talkers.quiet(counts)
                rounds_of.add(FIGURE, this_round["chats"] / this_round["none"])
            for load, values in by_load.items():
                label = "no chats" if load == "none" else f"{chatters} chats"
                phase.rows.append(latency_row(f"**all rounds, {label}**", values))
            ratio = rounds_of.median(FIGURE)
            run.figures[FIGURE] = ratio
            verdict = "met" if ratio <= BOUND else "NOT met"
            phase.rows += ["", f"The {len(others)} players who do not chat, measured; the {chatters} who do chat "
                               f"(from a client process of their own) without pause, their first chats spread over "
                               f"{CHAT_SPREAD_S:g} s as players' are, not in step (\"look around\"; "
                               f"{sum(counts.values())} chats, narrators: "
                               f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}). Tail with chats / "
                               f"without, each round's ratio: **{rounds_of.spread(FIGURE)}** (bound {BOUND}x on the "
                               f"median: {verdict}); all rounds pooled: "
                               f"{tail_value(by_load['chats']) / tail_value(by_load['none']):.2f}x."]
            talkers.close()
            await asyncio.gather(*(w.close() for w in listeners))
        print(f"  narrative load: others {tail(by_load['none'])} ms without chats, {tail(by_load['chats'])} ms with "
              f"{chatters} streaming: {ratio:.2f}x (bound {BOUND}x)")
    finally:
        system.stop()
        stop_process(paced)


async def bench_chat_model(run: Run, chats: int = 8) -> None:
    """Time to first chunk and whole answer, chat after chat, with SmolLM2 on llama-cpp-python's server."""
    lacking = missing()
    if lacking:
        run.failures.append(f"narrator with the local model: not installed ({'; '.join(lacking)}; make llm)")
        return
    model = ModelServer().start()
    system = LocalSystem(narrator_url=model.url, narrator_model=ALIAS, narrator_first_token_s="30",
                         narrator_answer_s="60")
    try:
        await system.start()
        phase = _phase(run, f"Narrator with the local model: {chats} chats, one after another", system,
                       f"narrator: SmolLM2-135M-Instruct (Q4_1 GGUF) on llama-cpp-python's OpenAI-compatible server, "
                       f"{model.threads} thread{'s' if model.threads > 1 else ''}, on the same two cores as "
                       f"everything else")
        first, total, tokens, told = [], [], [], Counter()
        async with GaiaClient(system.gateway_url, issue_token(Settings.from_env(), "teller"), EXPERIENCE) as client:
            await client.next("area_of_interest")
            for i in range(chats):
                line = "go to the main room" if i % 2 == 0 else "go to the entrance"
                sent, first_at, pieces = time.perf_counter(), None, 0
                async for frame in client.chat(line, timeout=90):
                    if frame["type"] == "chat_chunk":
                        first_at, pieces = first_at or time.perf_counter(), pieces + 1
                    else:
                        told[frame["narrator"] + (f" ({frame['reason']})" if frame.get("reason") else "")] += 1
                        if frame.get("reason") in MACHINERY:  # the guard's fallbacks are its job, not a failure
                            run.failures.append(f"local model chat {i + 1}: narrator {frame['narrator']} "
                                                f"({frame.get('reason')})")
                done = time.perf_counter()
                first.append(((first_at or done) - sent) * 1000)
                total.append((done - sent) * 1000)
                tokens.append(pieces)
        rate = await _gauge(system.gateway_url, "gaia_gateway_narrator_tokens_per_second_sum")
        count = await _gauge(system.gateway_url, "gaia_gateway_narrator_tokens_per_second_count")
        run.figures.update(model_first_chunk_p50_ms=pct(first, 50), model_answer_p50_ms=pct(total, 50))
        phase.rows += ["| line | p50 (ms) | max (ms) | n |", "|---|---|---|---|",
                       f"| chat -> first narrative chunk (client side) | {pct(first, 50):.0f} | {max(first):.0f} | "
                       f"{len(first)} |",
                       f"| chat -> chat_done (whole answer) | {pct(total, 50):.0f} | {max(total):.0f} | {len(total)} |",
                       "", f"Chunks per answer: p50 {pct([float(t) for t in tokens], 50):.0f}; streamed "
                           f"{rate / max(count, 1):.0f} tokens/s on average (gaia_gateway_narrator_tokens_per_second). "
                           f"Told by: {', '.join(f'{k} {v}' for k, v in sorted(told.items()))} (a story is sent a "
                           f"whole sentence at a time, after the guard; gaia-harness narrate scores them)."]
        print(f"  local model: first chunk p50 {pct(first, 50):.0f} ms (max {max(first):.0f}), whole answer p50 "
              f"{pct(total, 50):.0f} ms (max {max(total):.0f})")
    finally:
        system.stop()
        model.stop()


async def bench_chat(run: Run, quick: bool = False) -> None:
    """Both narrator phases, into `run` (bench.py's Run or a ChatRun)."""
    await bench_chat_model(run, chats=4 if quick else 8)
    await bench_chat_load(run, actions=15 if quick else 30)


NARRATOR_FAILURES = ("local model chat", "narrator with the local model", "narrative load")


def _block(phase: Phase, note: str) -> str:
    return "\n".join([f"## {phase.name}", "", note, "", *phase.rows, "", ""])


def write_doc(doc: str, run: ChatRun, command: str) -> str:
    """docs/benchmarks.md with the narrator's phases, settings rows, verdict and failures from this run.

    A page written by the whole bench gets its narrator parts replaced in place (each marked as from this
    command); a page without them gets them appended between markers.
    """
    note = f"_From `{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, not the run above._"
    verdict = next(r for r in verdict_rows(run.figures, run.rounds) if FIGURE_ABOUT in r)
    if not all(f"\n## {phase.name}\n" in doc for phase in run.phases):
        body = "\n".join([_block(p, note) for p in run.phases] + [verdict, *(f"- FAILED: {f}" for f in run.failures)])
        return replace_section(doc, f"{START}\n{body}\n{END}", START, END)
    lines = [line for line in doc.split("\n") if not line.startswith(tuple(f"- {f}" for f in NARRATOR_FAILURES))]
    doc = "\n".join(lines)
    for phase in run.phases:
        load = phase.name.startswith("Narrative load")
        phase.rows += [f"- FAILED: {f}" for f in run.failures if f.startswith("narrative load") == load]
        row, block = f"| {phase.name} | {phase.settings} |", _block(phase, note)
        doc = re.sub(rf"^\| {re.escape(phase.name)} \|.*$", lambda _, text=row: text, doc, flags=re.M)
        doc = re.sub(rf"^## {re.escape(phase.name)}\n.*?(?=^## |^!\[|\Z)", lambda _, text=block: text, doc,
                     flags=re.M | re.S)
    doc = re.sub(r"^## Failures in this run\n\n+(?=## )", "", doc, flags=re.M)  # none left
    return re.sub(rf"^\| {re.escape(FIGURE_ABOUT)}.*$", lambda _: verdict, doc, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="put the phases in docs/benchmarks.md")
    parser.add_argument("--talk", metavar="GATEWAY_URL", help="(internal) chatting players until SIGTERM")
    parser.add_argument("--talkers", type=int, default=20)
    args = parser.parse_args(argv)
    if args.talk:
        asyncio.run(talk(args.talk, args.talkers))
        return 0
    run = ChatRun()
    asyncio.run(bench_chat(run, args.quick))
    for phase in run.phases:
        print(_block(phase, f"Settings: {phase.settings}."))
    print("\n".join(verdict_rows(run.figures, run.rounds)[:2] + [r for r in verdict_rows(run.figures, run.rounds)
                                                                 if FIGURE_ABOUT in r]))
    if args.write:
        DOC.write_text(write_doc(DOC.read_text(), run, "python -m harness.bench.chat --write"))
        print(f"wrote the narrator's phases in {DOC}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
