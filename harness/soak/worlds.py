"""The soak's world checks on a sample of players: each one's delta-built world against kb's at the end, and
every resync snapshot it received against the world the stream yields at that version."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from harness.checks.snapshot import check_snapshots
from harness.checks.verify import EXPERIENCE
from harness.client.world import LocalWorld, normalise

SAMPLE_PLAYERS = 20  # chains that keep every frame they receive (the others keep sequence numbers only)
CONVERGE_WAIT_S = 10.0  # the last deltas may still be on their way


@dataclass
class WorldChecks:
    """What the sample's checks found."""

    worlds: int = 0  # sampled players whose world was compared with kb's
    diverged: list[str] = field(default_factory=list)
    snapshots: int = 0  # resync snapshots compared with the stream
    snapshot_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.worlds > 0 and not self.diverged and not self.snapshot_mismatches

    def line(self) -> str:
        return (f"{self.worlds} sampled players' worlds compared with kb's: {len(self.diverged)} diverged"
                + (f" ({'; '.join(self.diverged[:3])})" if self.diverged else "")
                + f"; their {self.snapshots} resync snapshots compared with the stream: "
                + f"{len(self.snapshot_mismatches)} differed"
                + (f" ({'; '.join(self.snapshot_mismatches[:3])})" if self.snapshot_mismatches else ""))


def world_of(frames: list[dict[str, Any]]) -> LocalWorld:
    """A player's world built from every frame it received, in order."""
    world = LocalWorld()
    for frame in frames:
        world.apply(frame)
    return world


async def check_worlds(kb_url: str, api_key: str, sampled: list[tuple[str, list[dict[str, Any]]]],
                       updates: dict[int, dict[str, Any]]) -> WorldChecks:
    """Every sampled (user, frames) that got a snapshot: its world against kb's view, its resync snapshots
    against the stream's broadcasts (`updates`, by version)."""
    out = WorldChecks()
    async with aiohttp.ClientSession(headers={"X-API-Key": api_key}) as http:
        for user, frames in sampled:
            if not any(f.get("type") == "area_of_interest" for f in frames):
                continue
            snapshots = check_snapshots(frames, updates, user)
            out.snapshots += snapshots.checked
            out.snapshot_mismatches += snapshots.mismatches
            out.worlds += 1
            if why := await differs(http, kb_url, user, world_of(frames)):
                out.diverged.append(f"{user}: {why}")
    return out


async def differs(http: aiohttp.ClientSession, kb_url: str, user: str, world: LocalWorld) -> str:
    """Why the world is not kb's view of this player ("" when it is), asked until the versions agree."""
    url = f"{kb_url}/experiences/{EXPERIENCE}/players/{user}/state"
    deadline = time.monotonic() + CONVERGE_WAIT_S
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(url) as resp:
            view = await resp.json()
        if resp.status == 200 and world.version == view.get("snapshot_version"):
            if world.gaps:
                return f"{world.gaps} deltas it could not apply"
            return "" if world.comparable() == normalise(view) else f"content differs at v{world.version}"
        await asyncio.sleep(0.1)
    return f"at v{world.version}, kb at v{view.get('snapshot_version')}"
