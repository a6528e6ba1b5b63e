"""The edge's token buckets (gateway/edge/buckets.py): a burst then a rate, keys apart, memory bounded."""
from __future__ import annotations

import pytest

from gateway.edge import buckets
from gateway.edge.buckets import KeyedBuckets, TokenBucket


def test_token_bucket_allows_its_burst_then_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(buckets.time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2/s
    assert [bucket.allow() for _ in range(2)] == [True, False]
    now[0] += 60  # never more than the burst
    assert sum(bucket.allow() for _ in range(10)) == 3


def test_keyed_buckets_keep_keys_apart_and_forget_the_oldest_past_the_bound() -> None:
    keyed = KeyedBuckets(rate=0.001, burst=1, max_keys=2)
    assert keyed.allow("a") and not keyed.allow("a")
    assert keyed.allow("b") and keyed.allow("c")  # "a" forgotten: a full bucket again
    assert keyed.allow("a")
