"""Snapshot requests to kb in a connect storm: one POST per experience in flight, the rest batched behind it."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.kbclient import KbRejected, KbUnavailable, ViewBatcher


class HeldKb:
    """kb's views endpoint as the batcher sees it: each POST recorded, answered when the test lets it go."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, list[dict[str, str]]]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def post(self, experience: str, sessions: list[dict[str, str]]) -> dict[str, Any]:
        self.posts.append((experience, sessions))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {"views": [{"type": "area_of_interest", "user_id": s["user_id"]} if s["user_id"] != "refused"
                          else {"error": "too_many_sessions", "message": "no"} for s in sessions]}


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_requests_arriving_while_a_post_is_under_way_go_together_in_the_next() -> None:
    kb = HeldKb()
    batcher = ViewBatcher(kb.post)
    first = batcher.view("room", "u0", "s0", "gw")
    await turns()
    assert [len(s) for _, s in kb.posts] == [1], "a lone request goes at the end of its own turn"
    later = [batcher.view("room", f"u{i}", f"s{i}", "gw") for i in range(1, 11)]
    await turns()
    assert len(kb.posts) == 1, "nothing more is sent while the first POST is under way"
    other = batcher.view("hall", "h1", "sh1", "gw")  # another experience is not held by this one
    await turns()
    assert [(e, len(s)) for e, s in kb.posts] == [("room", 1), ("hall", 1)]
    kb.release.set()
    assert (await first)["user_id"] == "u0"
    assert [v["user_id"] for v in await asyncio.gather(*later)] == [f"u{i}" for i in range(1, 11)]
    assert (await other)["user_id"] == "h1"
    assert [(e, len(s)) for e, s in kb.posts] == [("room", 1), ("hall", 1), ("room", 10)]
    assert batcher.requests == 3


async def test_a_failed_post_fails_its_sessions_and_the_next_batch_still_goes() -> None:
    kb = HeldKb()
    batcher = ViewBatcher(kb.post)
    kb.fail = KbUnavailable("kb away")
    first = batcher.view("room", "u0", "s0", "gw")
    await turns()
    waiting = batcher.view("room", "u1", "s1", "gw")
    kb.release.set()
    with pytest.raises(KbUnavailable):
        await first
    with pytest.raises(KbUnavailable):
        await waiting  # sent after the failure, which kb answered the same way
    kb.fail = None
    assert (await batcher.view("room", "u2", "s2", "gw"))["user_id"] == "u2"
    assert [len(s) for _, s in kb.posts] == [1, 1, 1]


async def test_a_refused_session_hears_kb_refusal_and_the_others_their_views() -> None:
    kb = HeldKb()
    kb.release.set()
    batcher = ViewBatcher(kb.post)
    ok, refused = batcher.view("room", "u0", "s0", "gw"), batcher.view("room", "refused", "s1", "gw")
    assert (await ok)["user_id"] == "u0"
    with pytest.raises(KbRejected):
        await refused
    assert len(kb.posts) == 1
