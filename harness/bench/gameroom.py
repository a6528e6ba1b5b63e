"""A room loaded like a game: every player acts at docs/scaling.md's rate (one action every 5 s), walking between
areas, collecting and dropping, with location visibility on; the gateway as shipped (one process per core).

The players are the crowd's sockets (harness/bench/crowdclients.py), each acting on its own socket and stamping
every copy it reads; a change's latency is from its actor's send to each other player's read. The experience
is wylding-woods with `"visibility": "location"`: a change's content goes to the players it concerns, every
other player gets the version step, so each action is one copy per player. Rooms of several sizes, in rounds;
the capacity line is the largest size whose median p99 holds the bound.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.bench.crowd import Crowd
from harness.bench.crowdclients import Seen
from harness.bench.kit import EXPERIENCE, Run, cpu_quiet
from harness.report import pct, tail, tail_value
from harness.system.devstack import gateway_workers
from harness.system.local import LocalSystem

EVERY_S = 5.0  # docs/scaling.md: each player acts every 5 s
BOUND_MS = 50.0  # p99 of other players' copies
DATA = Path(__file__).resolve().parents[2] / "kb" / "data" / EXPERIENCE


def location_content(work: Path) -> tuple[Path, dict[str, Any]]:
    """wylding-woods with location visibility in `work` (GAIA_KB_DATA_DIR), and what a player needs of it."""
    folder = work / "content"
    shutil.copytree(DATA, folder / EXPERIENCE)
    zone_file = folder / EXPERIENCE / "zone.json"
    zone = json.loads(zone_file.read_text())
    zone["visibility"] = "location"
    zone_file.write_text(json.dumps(zone, indent=2))
    items: dict[str, list[str]] = {}
    for item in json.loads((folder / EXPERIENCE / "items.json").read_text())["instances"]:
        items.setdefault(item["area_id"], []).append(item["instance_id"])
    game = {"start_area": zone["start_area"], "items": items,
            "exits": {area: spec["exits"] for area, spec in zone["areas"].items()}}
    return folder, game


async def play_round(crowd: Crowd, game: dict[str, Any], seconds: float) -> tuple[list[float], int, int, int]:
    """Everyone plays for `seconds`: (other players' latencies in ms, changes, copies expected, missing)."""
    share = -(-crowd.players // len(crowd.procs))
    await asyncio.gather(*(p.ask("play", {"every_s": EVERY_S, "seconds": seconds, "first": i * share, "game": game},
                                 timeout=seconds + 120) for i, p in enumerate(crowd.procs)))
    await asyncio.sleep(2.0)  # the last actions' copies
    parts = await asyncio.gather(*(p.ask("take_play") for p in crowd.procs))
    seen: list[Seen] = [s for part in parts for s in part[0]]
    acted: dict[int, tuple[int, float]] = {v: (who, at) for part in parts for v, who, at in part[1]}
    waits = [(at - acted[v][1]) * 1000 for v, who, at in seen if v in acted and who != acted[v][0]]
    expected = len(acted) * (crowd.players - 1)
    missing = max(0, expected - len(waits))
    # A copy that never came is later than any that did: the tail is taken over every copy owed, not only
    # the ones that arrived (a room past capacity must not look fast by losing its slowest copies).
    return waits + [float("inf")] * missing, len(acted), expected, missing


async def bench_game_room(sizes: list[int], rounds: int, seconds: float, run: Run) -> None:
    """Each room size in turn, `rounds` rounds of `seconds` of play; p99 per round, the capacity line at the end."""
    work = Path(tempfile.mkdtemp(prefix="gaia-gameroom-"))
    folder, game = location_content(work)
    workers = gateway_workers()
    (work / "system").mkdir()
    system = await LocalSystem(work=work / "system", gateway_workers=str(workers), kb_data_dir=str(folder)).start()
    phase = run.phase(f"A room loaded like a game: every player acts every {EVERY_S:g} s, location visibility, "
                      f"{workers} gateway processes (as shipped)", system,
                      "wylding-woods with `\"visibility\": \"location\"` (GAIA_KB_DATA_DIR: a copy of kb/data)")
    phase.rows += [f"Each player acts on its own socket every {EVERY_S:g} s (from a random start): a drop of what it "
                   "holds (20%), a collect of an item that began in its area (20%, often gone: an answer, no change), "
                   f"else a walk through an exit. {rounds} rounds of {seconds:g} s per size; the players are read by "
                   "several client processes; latency from the actor's send to each other player's read; a copy "
                   "that never came counts as later than any (inf).", "",
                   "| players, round | actions/s offered | changes | other players' copies (got / expected) | "
                   "p50 (ms) | tail (ms) |", "|---|---|---|---|---|---|"]
    held: list[int] = []
    try:
        for size in sizes:
            crowd = Crowd(system, size, max(2, min(4, size // 100)))
            crowd.names = [f"game{size}_{i}" for i in range(size)]
            try:
                await crowd.start()
                for r in range(rounds):
                    await cpu_quiet(system.server_procs())
                    waits, changes, expected, missing = await play_round(crowd, game, seconds)
                    phase.expected += expected
                    phase.missing += missing  # counted, not a failure: a room past capacity is what it measures
                    run.rounds.add(f"game_p99_{size}", tail_value(waits))
                    phase.rows.append(f"| {size}, round {r + 1} | {size / EVERY_S:.0f} | {changes} | "
                                      f"{expected - missing} / {expected} | {pct(waits, 50):.1f} | {tail(waits)} |")
                    print(f"  game room {size}, round {r + 1}: {changes} changes, "
                          f"{expected - missing}/{expected} copies, p50 {pct(waits, 50):.1f} ms, {tail(waits)} ms")
            finally:
                await crowd.stop()
            if run.rounds.median(f"game_p99_{size}") <= BOUND_MS:
                held.append(size)
        biggest = max(sizes)
        run.figures["game_p99_ms"] = run.rounds.median(f"game_p99_{biggest}")
        run.rounds.values["game_p99_ms"] = run.rounds.values[f"game_p99_{biggest}"]
        capacity = max(held, default=0)
        run.figures["game_capacity_players"] = float(capacity)
        phase.rows += ["", "| room size | p99 of other players' copies, each round's (ms) |", "|---|---|",
                       *[f"| {s} players, {s / EVERY_S:.0f} actions/s | {run.rounds.spread(f'game_p99_{s}', 1)} |"
                         for s in sizes], "",
                       f"Capacity on this machine: the largest room tried ({', '.join(map(str, sizes))} players) whose "
                       f"median p99 held {BOUND_MS:g} ms: **{capacity} players, {capacity / EVERY_S:.0f} actions/s**"
                       + (" (none held)" if not held else "") + "."]
    finally:
        system.stop()
        shutil.rmtree(work, ignore_errors=True)


async def main(sizes: list[int], rounds: int, seconds: float) -> None:
    """The phase alone, printed (`python -m harness.bench.gameroom 100 200`)."""
    run = Run()
    await bench_game_room(sizes, rounds, seconds, run)
    print("\n".join(run.phases[-1].rows))


if __name__ == "__main__":
    import argparse
    import resource

    from harness.bench.kit import run_load
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    run_load(main(args.sizes, args.rounds, args.seconds))
