"""kb's presence book: a user counts once across devices, re-announcements are no news, grace ends in a leave."""
from __future__ import annotations

from kb.presence import PresenceBook, PresenceChange


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


def test_ten_thousand_joins_stay_cheap() -> None:
    book = PresenceBook(grace_s=60, stale_s=45)
    changes = [c for i in range(10_000) for c in book.join(f"s{i}", f"u{i}", "w", "g", 0)]
    assert len(changes) == 10_000 and len(book.present_users("w")) == 10_000
