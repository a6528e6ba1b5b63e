"""Full collections paced by heap doubling, and calls shared by those asking the same at once."""
from __future__ import annotations

import asyncio
import gc

import pytest

from shared.gcpacer import NEVER, GcPacer
from shared.singleflight import SingleFlight


@pytest.fixture
def pacer() -> GcPacer:
    """A pacer installed for one test; CPython's own thresholds and an unfrozen heap afterwards."""
    thresholds = gc.get_threshold()
    pacer = GcPacer(every_s=3600.0)
    pacer.install()
    yield pacer
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_pacer_takes_full_collections_from_cpython_and_collects_when_the_heap_doubles(pacer: GcPacer) -> None:
    assert gc.get_threshold()[2] == NEVER and gc.get_freeze_count() > 0
    assert not pacer.due()
    cycles = []
    while not pacer.due():  # cyclic garbage only a full collection frees, as dead sessions leave
        node: dict[str, object] = {}
        node["self"] = node
        cycles.append(node)
    del cycles
    pacer.collect()
    assert pacer.collections == 1 and not pacer.due()


def test_the_pacer_collects_a_heap_that_grew_at_all_once_its_interval_passed(pacer: GcPacer) -> None:
    pacer.every_s = 0.0
    keep = [[i] for i in range(10_000)]
    assert pacer.due()
    pacer.collect()
    pacer.every_s = 3600.0
    assert not pacer.due() and keep


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
