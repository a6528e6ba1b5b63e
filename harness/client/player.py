"""A simulated player: walks, collects, drops and talks at random, and reconnects when cut off."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from harness.client.ws import GaiaClient

RECOVERABLE = (ConnectionError, TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, RuntimeError)


@dataclass
class PlayerStats:
    """What one simulated player did and saw."""

    actions: int = 0
    succeeded: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    repairs: int = 0  # get_state after a gap in the version chain
    latencies_ms: list[float] = field(default_factory=list)


class SimPlayer:
    """One player's loop over a GaiaClient; any gateway in `urls` will do after a disconnect."""

    def __init__(self, urls: list[str], token: str, experience: str, rng: random.Random,
                 think_s: tuple[float, float] = (0.05, 0.3)) -> None:
        self.urls = urls
        self.rng = rng
        self.think_s = think_s
        self.client = GaiaClient(urls[0], token, experience)
        self.stats = PlayerStats()
        self._url_index = 0
        self._gaps_seen = 0

    @property
    def user_id(self) -> str:
        return self.client.connected["user_id"] if self.client.connected else "?"

    async def ensure_connected(self, deadline: float) -> None:
        """(Re)connect, resuming from the last seq, trying each gateway in turn until the deadline."""
        delay = 0.05
        while not self.client.is_open:
            try:
                await self.client.drop()
                await self.client.connect(last_seq=self.client.last_seq, timeout=5)
                if self.client.last_seq is None:
                    await self.client.next("area_of_interest", timeout=5)
                return
            except RECOVERABLE:
                if time.monotonic() > deadline:
                    raise
                self._url_index = (self._url_index + 1) % len(self.urls)
                self.client.base_url = self.urls[self._url_index]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def run(self, until: float) -> None:
        """Act until the monotonic deadline, surviving any number of disconnects."""
        await self.ensure_connected(until + 30)
        while time.monotonic() < until:
            try:
                if not self.client.is_open:
                    self.stats.reconnects += 1
                    await self.ensure_connected(until + 30)
                await self.step()
            except RECOVERABLE as exc:
                name = type(exc).__name__
                self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            await asyncio.sleep(self.rng.uniform(*self.think_s))

    async def step(self) -> None:
        """One random, sensible action based on what the local world shows."""
        if self.client.world.gaps > self._gaps_seen:
            self._gaps_seen = self.client.world.gaps
            self.stats.repairs += 1
            await self.client.get_state()
            return
        action, args = self.choose()
        started = time.perf_counter()
        answer = await self.client.act(action, **args)
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.stats.actions += 1
        if answer["type"] == "error":
            self.stats.errors[answer["code"]] = self.stats.errors.get(answer["code"], 0) + 1
        elif answer["success"]:
            self.stats.succeeded += 1
        else:
            self.stats.refused += 1

    def choose(self) -> tuple[str, dict[str, Any]]:
        view = self.client.world.view
        if view is None:
            return "examine", {}
        area = view["areas"][view["player"]["current_area"]]
        items = [i for spot in area["spots"].values() for i in spot["items"]]
        inventory = view["player"]["inventory"]
        roll = self.rng.random()
        if roll < 0.35 and items:
            return "collect_item", {"instance_id": self.rng.choice(items)["instance_id"]}
        if roll < 0.55 and inventory:
            return "drop_item", {"instance_id": self.rng.choice(inventory)["instance_id"]}
        if roll < 0.85:
            return "go", {"destination": self.rng.choice(area["exits"])}
        if roll < 0.93:
            return "talk", {"npc_id": "anyone", "message": "tell me about the garden"}
        return "examine", {}
