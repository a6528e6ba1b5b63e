"""kb.ownership: a world's lease through a store that answers, refuses, or says nothing at all.

Found by `gaia-harness chaos --cluster`: while the lease bucket's leader was being elected (its node
paused or cut off) no renewal was answered, the owner stopped writing after its 3 s TTL and the game
stood still until the election was over and a kb had taken the lease again (issue 37).
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from kb.ownership import WorldOwnership

WORLD = "w"


class FakeBucket:
    """One key, compare-and-set on its revision; `silent`: every request goes unanswered."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.revision = 0
        self.silent = False

    def _answer(self) -> None:
        if self.silent:
            raise nats.errors.TimeoutError

    async def create(self, key: str, value: bytes) -> int:
        self._answer()
        if self.value is not None:
            raise KeyWrongLastSequenceError("exists")
        self.value, self.revision = value, self.revision + 1
        return self.revision

    async def update(self, key: str, value: bytes, last: int) -> int:
        self._answer()
        if self.value is None or last != self.revision:
            raise KeyWrongLastSequenceError("wrong last sequence")
        self.value, self.revision = value, self.revision + 1
        return self.revision

    async def get(self, key: str) -> Any:
        self._answer()
        if self.value is None:
            raise KeyNotFoundError
        return SimpleNamespace(value=self.value, revision=self.revision)


def owner(bucket: FakeBucket, url: str, ttl_s: float = 0.3, grace_s: float = 1.0) -> tuple[WorldOwnership, list[str]]:
    taken: list[str] = []

    async def acquired(experience: str) -> None:
        taken.append(experience)
    ownership = WorldOwnership(SimpleNamespace(connected=True, jetstream_ok=True), [WORLD], url, ttl_s, acquired,  # type: ignore[arg-type]
                               grace_s=grace_s)
    ownership._kv = bucket  # type: ignore[assignment]
    return ownership, taken


def wait(seconds: float) -> None:
    time.sleep(seconds)  # owns() reads the monotonic clock; nothing else runs meanwhile


async def test_the_owner_keeps_writing_through_a_silent_store_for_its_grace_then_stops() -> None:
    bucket = FakeBucket()
    mine, _ = owner(bucket, "http://a", ttl_s=0.3, grace_s=1.0)
    await mine.hold_all()
    assert mine.owns(WORLD)
    bucket.silent = True  # its leader being elected: nobody can take the lease through it either
    await mine.hold_all()
    wait(0.5)
    assert mine.owns(WORLD), "past the TTL, within the grace: still writing"
    wait(1.0)
    assert not mine.owns(WORLD), "past TTL and grace without an answer: stops"


async def test_an_owner_whose_key_expired_in_the_silence_takes_it_back_without_a_gap() -> None:
    bucket = FakeBucket()
    mine, taken = owner(bucket, "http://a")
    await mine.hold_all()
    bucket.silent = True
    await mine.hold_all()
    bucket.silent, bucket.value = False, None  # the new leader's copy of the key has expired
    await mine.hold_all()
    assert mine.owns(WORLD) and bucket.value == b"http://a"
    assert taken == [WORLD, WORLD], "taken again (the world reloaded), not lost and left to a race"


async def test_an_answer_that_another_kb_holds_the_lease_ends_the_grace_at_once() -> None:
    bucket = FakeBucket()
    mine, _ = owner(bucket, "http://a", grace_s=30.0)
    await mine.hold_all()
    bucket.silent = True
    await mine.hold_all()
    bucket.silent, bucket.value = False, None
    other, _ = owner(bucket, "http://b")
    await other.hold_all()  # the key expired and the other kb took it
    await mine.hold_all()
    assert other.owns(WORLD) and not mine.owns(WORLD)


async def test_a_lookup_the_store_cannot_answer_names_the_owner_it_last_named() -> None:
    bucket = FakeBucket()
    mine, _ = owner(bucket, "http://a")
    other, _ = owner(bucket, "http://b")
    await mine.hold_all()
    assert await other.owner_url(WORLD) == "http://a"
    bucket.silent = True  # the owner keeps writing meanwhile: requests must still reach it
    assert await other.owner_url(WORLD) == "http://a"
    bucket.silent, bucket.value = False, None
    assert await other.owner_url(WORLD) is None
