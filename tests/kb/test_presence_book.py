"""kb's presence book: a user counts once across devices, re-announcements are no news, grace ends in a leave."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from kb.presence import PresenceBook, PresenceChange
from shared.incarnations import new_incarnation


def test_two_devices_join_once_and_leave_with_the_last() -> None:
    book = PresenceBook(grace_s=60, stale_s=45)
    assert book.join("phone", "alice", "w", "g1", 0) == [PresenceChange("join", "alice", "w")]
    assert book.join("headset", "alice", "w", "g2", 0) == []
    assert book.join("phone", "alice", "w", "g1", 5) == [], "a gateway re-announcing a session is no news"
    assert book.leave("phone") == [] and book.present_users("w") == {"alice"}
    assert book.leave("headset") == [PresenceChange("leave", "alice", "w")]
    assert book.present_users("w") == set()


def test_a_dropped_session_leaves_only_when_its_grace_ends_and_survives_a_restart() -> None:
    book = PresenceBook(grace_s=60, stale_s=45)
    book.join("s", "bob", "w", "g", 0)
    book.drop("s", 10)
    assert book.expire(69) == [] and book.present_users("w") == {"bob"}
    restarted = PresenceBook(grace_s=60, stale_s=45)
    restarted.restore(book.take_changes()[0])
    assert restarted.present_users("w") == {"bob"}
    assert restarted.expire(70) == [PresenceChange("leave", "bob", "w")]


def test_a_newer_incarnation_of_a_gateway_drops_what_the_older_one_left_at_once() -> None:
    """A worker SIGKILLed and started again with the same slot: its old sessions enter their grace when the
    new one first reports, so a clean close after a resume is a leave, and a vanished phone leaves after
    the grace counted from the restart (not after the renewals time out)."""
    book = PresenceBook(grace_s=60, stale_s=45)
    old, new, other = new_incarnation("gw-w0", 1000.0), new_incarnation("gw-w0", 1010.0), new_incarnation("gw-w1", 0)
    book.join("a1", "alice", "w", old, 1000)
    book.join("v1", "victor", "w", old, 1000)
    book.join("o1", "olga", "w", other, 1000)
    book.gateway_started(new, 1012)  # the restarted worker's hello
    assert book.ended_by_restart == 2 and book.live_sessions("w", "olga") == 1, "only the restarted slot's"
    book.join("a2", "alice", "w", new, 1013)  # alice resumed on the new worker
    assert book.leave("a2") == [PresenceChange("leave", "alice", "w")], "a clean close is a leave at once"
    assert book.expire(1071) == [] and "victor" in book.present_users("w")
    assert book.expire(1072) == [PresenceChange("leave", "victor", "w")], "grace counted from the restart"


def test_an_older_incarnation_never_ends_a_newer_ones_sessions() -> None:
    book = PresenceBook(grace_s=60, stale_s=45)
    old, new = new_incarnation("gw", 1000.0), new_incarnation("gw", 2000.0)
    book.join("n", "nina", "w", new, 2000)
    book.alive("o", "otto", "w", old, 2001)  # a process left over from before (an orphan) still reports
    book.gateway_started(old, 2002)
    assert book.ended_by_restart == 0 and book.live_sessions("w", "nina") == 1
    restarted = PresenceBook(grace_s=60, stale_s=45)  # kb restarted: incarnations come back with the rows
    restarted.restore(book.take_changes()[0])
    restarted.gateway_started(old, 2003)
    assert restarted.ended_by_restart == 0 and restarted.live_sessions("w", "nina") == 1


def test_ten_thousand_joins_stay_cheap() -> None:
    book = PresenceBook(grace_s=60, stale_s=45)
    changes = [c for i in range(10_000) for c in book.join(f"s{i}", f"u{i}", "w", "g", 0)]
    assert len(changes) == 10_000 and len(book.present_users("w")) == 10_000


def _announcer(committed: list) -> Any:
    from kb.announcer import PresenceAnnouncer

    async def commit(events, now):
        committed.append([orjson.loads(body) for _, _, body in events])
    return PresenceAnnouncer("woods", 0.0, lambda user: f"area-of-{user}", commit)


async def test_a_leave_and_return_inside_one_window_tells_nobody() -> None:
    committed: list = []
    announcer = _announcer(committed)
    announcer.add([PresenceChange("leave", "bob", "woods")])
    announcer.add([PresenceChange("join", "bob", "woods")])
    await announcer.flush()
    assert committed == [] and announcer.cancelled == 1


async def test_one_change_is_a_plain_presence_frame_and_several_are_one_batch() -> None:
    committed: list = []
    announcer = _announcer(committed)
    announcer.add([PresenceChange("join", "bob", "woods")])
    await announcer.flush()
    announcer.add([PresenceChange("join", "carol", "woods"), PresenceChange("leave", "dave", "woods"),
                   PresenceChange("join", "erin", "woods"), PresenceChange("leave", "erin", "woods")])
    await announcer.flush()
    single, batch = committed
    assert single == [{**single[0], "type": "presence", "event": "join", "user_id": "bob", "area_id": "area-of-bob"}]
    assert [frame["type"] for frame in batch] == ["presence_batch"]
    assert batch[0]["changes"] == [{"event": "join", "user_id": "carol", "area_id": "area-of-carol"},
                                   {"event": "leave", "user_id": "dave", "area_id": "area-of-dave"}]


async def test_a_storm_is_cut_into_bounded_batches_and_a_failed_commit_is_retried() -> None:
    from kb.announcer import BATCH_LIMIT
    committed: list = []
    announcer = _announcer(committed)
    announcer.add([PresenceChange("join", f"p{i}", "woods") for i in range(BATCH_LIMIT * 2 + 1)])
    real_commit = announcer._commit

    async def failing(events, now):
        raise OSError("disk full")
    announcer._commit = failing
    with pytest.raises(OSError):
        await announcer.flush()
    announcer._commit = real_commit
    await announcer.flush()
    assert [len(frame["changes"]) for frame in committed[0]] == [BATCH_LIMIT, BATCH_LIMIT, 1]
