"""Calls shared by those asking the same at once (gateway/singleflight.py)."""
from __future__ import annotations

import asyncio

from gateway.singleflight import SingleFlight


async def test_askers_of_one_key_share_one_call_and_its_failure() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def answer() -> int:
        await release.wait()
        return 42
    waiting = [asyncio.ensure_future(flights.ask("k", answer)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [42] * 50 and flights.calls == 1

    async def fail() -> int:
        raise RuntimeError("kb away")
    failing = [asyncio.ensure_future(flights.ask("k", fail)) for _ in range(3)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and flights.calls == 2


async def test_without_joining_a_running_call_a_later_asker_gets_a_call_of_its_own() -> None:
    flights: SingleFlight[str, int] = SingleFlight(join_while_running=False)
    release = asyncio.Event()

    async def answer() -> int:
        await release.wait()
        return flights.calls
    first = asyncio.ensure_future(flights.ask("k", answer))
    await asyncio.sleep(0.01)  # the first call has started: it was sent before the next asker's SUB
    second = asyncio.ensure_future(flights.ask("k", answer))
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(first, second) == [2, 2] and flights.calls == 2
