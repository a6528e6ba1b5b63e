"""Full collections paced by heap growth (shared/service/gcpacer.py)."""
from __future__ import annotations

import gc
import sys

import pytest

from shared.service.gcpacer import MIN_GAP_S, NEVER, GcPacer


HEAP_BLOCKS = 200_000  # the heap the pacer sees at install, whatever ran in this process before


@pytest.fixture
def pacer(monkeypatch: pytest.MonkeyPatch) -> GcPacer:
    """A pacer installed for one test; CPython's own thresholds and an unfrozen heap afterwards.

    Late in a suite the process holds millions of blocks, and doubling that with garbage took over
    pytest's 120 s: the pacer is shown a heap of HEAP_BLOCKS plus whatever the test itself makes
    (the block counter shifted, every block the test allocates still counted for real).
    """
    thresholds = gc.get_threshold()
    real = sys.getallocatedblocks
    gc.collect()
    offset = max(0, real() - HEAP_BLOCKS)
    monkeypatch.setattr(sys, "getallocatedblocks", lambda: real() - offset)
    pacer = GcPacer(every_s=30.0)
    pacer.install()
    yield pacer
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _grow_by(pacer: GcPacer, factor: float) -> list[object]:
    """Cyclic garbage (only a full collection frees it, as with players who left) until the heap grew by `factor`."""
    target = pacer._after_last * factor
    made: list[object] = []
    while sys.getallocatedblocks() < target:
        node: dict[str, object] = {}
        node["self"] = node
        made.append(node)
    return made


def test_the_pacer_takes_full_collections_from_cpython_and_collects_a_doubled_heap_at_once(pacer: GcPacer) -> None:
    assert gc.get_threshold()[2] == NEVER and gc.get_freeze_count() > 0
    assert not pacer.due()
    cycles = _grow_by(pacer, 2.0)
    assert pacer.due()  # no time has passed: the doubling alone decides
    del cycles
    pacer.collect()
    assert pacer.collections == 1 and not pacer.due()


def test_a_quarter_more_is_collected_only_after_the_minimum_gap(pacer: GcPacer) -> None:
    keep = _grow_by(pacer, 1.3)
    assert not pacer.due()  # a quarter more, but the last collection was just now
    pacer._last_at -= MIN_GAP_S
    assert pacer.due() and keep


def test_a_quiet_heap_that_grew_a_little_is_collected_within_the_interval(pacer: GcPacer) -> None:
    keep = _grow_by(pacer, 1.1)
    pacer._last_at -= MIN_GAP_S
    assert not pacer.due()  # less than a quarter: not yet
    pacer._last_at -= pacer.every_s
    assert pacer.due() and keep
