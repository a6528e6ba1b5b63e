"""kb's commit rate per process on SQLite and PostgreSQL (fsync on), with 10 and with 10,000 players ever."""
from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from typing import Any

import aiohttp

from harness.bench.kit import EXPERIENCE
from harness.rounds import Rounds
from harness.system.local import LocalSystem
from harness.system.pg import PostgresServer, pg_bin
from kb.stores import WorldDelta, open_store
from kb.world.content import load_content
from kb.world.model import initial_world
from shared.config import Settings

WORKERS = 8  # actions in flight (kb commits one world's actions one after another)
NEIGHBOUR = {"entrance": "main_room", "main_room": "entrance"}


async def seed(url: str, players_ever: int) -> None:
    """A saved world whose players map holds `players_ever` players, all seen just now (the worst case)."""
    world = initial_world(load_content(EXPERIENCE))
    start = {"current_location": world["zone"]["id"], "current_area": "entrance", "inventory": []}
    world["players"] = {f"ever{i}": dict(start) for i in range(players_ever)}
    store = open_store(url)
    await store.open()
    await store.commit(EXPERIENCE, 0, WorldDelta.whole(world), [], int(time.time() * 1000))
    await store.close()


async def drive(kb_url: str, key: str, seconds: float) -> tuple[int, int]:
    """WORKERS players walking back and forth through kb's HTTP API for `seconds`: (committed, refused)."""
    done, refused = 0, 0
    until = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as http:
        async def walker(user: str) -> None:
            nonlocal done, refused
            area = "entrance"
            while time.monotonic() < until:
                body = {"user_id": user, "action": "go", "destination": NEIGHBOUR[area]}
                async with http.post(f"{kb_url}/experiences/{EXPERIENCE}/actions", json=body) as resp:
                    answer = await resp.json()
                if answer.get("success"):
                    done += 1
                else:
                    refused += 1  # it stood elsewhere (e.g. after the warm-up): the flip puts it right
                area = NEIGHBOUR[area]
        await asyncio.gather(*(walker(f"walker{i}") for i in range(WORKERS)))
    return done, refused


async def measure(url: str, players_ever: int, seconds: float) -> dict[str, Any]:
    """Seed, start nats-server + kb (+ gateway) on the store, drive, stop: the committed rate."""
    await seed(url, players_ever)
    system = await LocalSystem(kb_store=url).start()
    try:
        await drive(system.kb_url, Settings.from_env().kb_api_key, 1.0)  # warm-up
        done, refused = await drive(system.kb_url, Settings.from_env().kb_api_key, seconds)
    finally:
        system.stop()
    return {"rate": done / seconds, "done": done, "refused": refused}


async def bench_kb_stores(figures: dict[str, float], rows: list[str], seconds: float = 5.0,
                          many: int = 10_000, rounds: int = 1, spreads: Rounds | None = None) -> None:
    """Both stores, few and many players ever, in interleaved rounds (the order of few and many swapped
    each round); figures kb_<store>_actions_per_s and kb_<store>_many_vs_few are medians over the rounds."""
    spreads = spreads if spreads is not None else Rounds()
    rows += ["| round | store | players ever | actions committed/s | committed (refused) in the timed run |",
             "|---|---|---|---|---|"]
    postgres = PostgresServer().start() if pg_bin("initdb") else None
    names = itertools.count(1)
    try:
        for r in range(rounds):
            for store in ("sqlite", "postgres"):
                if store == "postgres" and postgres is None:
                    if r == 0:
                        rows.append("| - | postgres | - | not measured: PostgreSQL is not installed | - |")
                    continue
                rates = {}
                for players_ever in ((10, many) if r % 2 == 0 else (many, 10)):
                    url = (f"sqlite:///{tempfile.mkdtemp(prefix='gaia-kbbench-')}/kb.sqlite3" if store == "sqlite"
                           else await postgres.database(f"bench{next(names)}"))  # type: ignore[union-attr]
                    result = await measure(url, players_ever, seconds)
                    rates[players_ever] = result["rate"]
                    rows.append(f"| {r + 1} | {store} | {players_ever:,} | {result['rate']:.0f} | {result['done']} "
                                f"({result['refused']}) |")
                spreads.add(f"kb_{store}_actions_per_s", rates[10])
                spreads.add(f"kb_{store}_many_vs_few", rates[many] / rates[10])
    finally:
        if postgres is not None:
            postgres.stop()
    for store in ("sqlite", "postgres"):
        if f"kb_{store}_many_vs_few" in spreads.values:
            figures[f"kb_{store}_actions_per_s"] = spreads.median(f"kb_{store}_actions_per_s")
            figures[f"kb_{store}_many_vs_few"] = spreads.median(f"kb_{store}_many_vs_few")
            rows.append("")
            rows.append(f"{store}: actions/s with {many:,} players ever / with 10, each round's ratio: "
                        f"**{spreads.spread(f'kb_{store}_many_vs_few')}**.")
