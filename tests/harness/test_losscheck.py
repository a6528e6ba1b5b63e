"""The loss check's rule on hand-made chains: only a due resync forgives, and a chain that got nothing owes."""
from __future__ import annotations

from harness.checks.loss import LEAVE_MARGIN_S, StreamMessage, check_chain

THRESHOLD = 3


def updates(count: int, stored_at: float = 100.0) -> list[StreamMessage]:
    """world_updates 1..count, version = seq, stored one second apart from `stored_at`."""
    return [StreamMessage(seq, "world_update", seq, None, stored_at + seq) for seq in range(1, count + 1)]


def frames(*items: object) -> list[dict[str, object]]:
    """Ints are events by seq; dicts are frames as they are."""
    return [{"seq": i} if isinstance(i, int) else i for i in items]  # type: ignore[misc]


def snapshot(version: int) -> dict[str, object]:
    return {"type": "area_of_interest", "snapshot_version": version}


RESYNC = {"type": "resync_required", "reason": "behind"}


def test_a_missing_event_is_lost_and_a_get_state_snapshot_forgives_nothing() -> None:
    chain = frames(snapshot(1), 2, 4, snapshot(6), 7)  # 3, 5, 6 never came; the snapshot was not after a resync
    result = check_chain(updates(7), chain, "bob", THRESHOLD)
    assert result.due - {2, 4, 7} == {3, 5, 6} and not result.forgiven and not result.resyncs


def test_a_due_resync_forgives_what_its_snapshot_covers() -> None:
    chain = frames(snapshot(1), 2, RESYNC, snapshot(8), 9)  # 3..8 is six behind > 3
    result = check_chain(updates(9), chain, "bob", THRESHOLD)
    assert result.forgiven == {3, 4, 5, 6, 7, 8} and result.due == {2, 9}
    assert [r.due for r in result.resyncs] == [True] and result.resyncs[0].behind == 6 and not result.needless


def test_a_needless_resync_is_caught() -> None:
    chain = frames(snapshot(1), 2, 3, RESYNC, snapshot(5), 6)  # 4..5: two behind, the stream held the cursor
    result = check_chain(updates(6), chain, "bob", THRESHOLD)
    assert len(result.needless) == 1 and result.needless[0].behind == 2, result.resyncs


def test_a_resync_for_a_cursor_the_stream_no_longer_holds_is_due() -> None:
    messages = updates(12)[8:]  # the stream holds 9..12 only
    chain = frames(snapshot(1), 2, RESYNC, snapshot(10), 11, 12)
    result = check_chain(messages, chain, "bob", THRESHOLD)
    assert result.resyncs[0].due and "older" in result.resyncs[0].why


def test_replays_are_counted_and_move_the_cursor() -> None:
    chain = frames(snapshot(1), 2, {"type": "resumed", "from_seq": 3, "to_seq": 4, "replayed": 2}, 3, 4, 5)
    result = check_chain(updates(5), chain, "bob", THRESHOLD)
    assert result.replays == 1 and result.due == {2, 3, 4, 5}


def test_a_chain_that_lost_everything_owes_what_was_stored_before_it_left() -> None:
    messages = updates(10)  # stored at 101..110
    result = check_chain(messages, frames(snapshot(2)), "bob", THRESHOLD, left_at=108.0)
    assert result.due == {n for n in range(3, 11) if 100 + n <= 108.0 - LEAVE_MARGIN_S}  # nothing arrived: all lost
    assert result.due == {3, 4, 5, 6, 7} and not result.forgiven


def test_presence_about_oneself_is_not_owed() -> None:
    messages = [*updates(3), StreamMessage(4, "presence", None, "bob"), StreamMessage(5, "presence", None, "eve")]
    result = check_chain(messages, frames(snapshot(1), 2, 3, 5), "bob", THRESHOLD)
    assert result.due == {2, 3, 5}
