"""The cluster chaos run's ledger checks catch what they claim to: a lost acknowledged event, a duplicate,
a version gap (half a commit), an action committed twice, an answer with no event."""
from __future__ import annotations

import random

import orjson

from harness.chaos.clustercheck import StreamEntry, check_ledger
from harness.chaos.players import Answer, LedgerPlayer


def update(seq: int, version: int, actor: str) -> StreamEntry:
    payload = orjson.dumps({"type": "world_update", "snapshot_version": version, "base_version": version - 1,
                            "actor_id": actor})
    return StreamEntry(seq, "world_update", version, version - 1, actor, None, payload)


def row(entry: StreamEntry, acked: bool = True) -> dict[str, object]:
    return {"msg_id": f"w:{entry.version}", "payload": entry.payload, "stream_seq": entry.seq if acked else None}


def player(user: str, sent: int, committed: list[int]) -> LedgerPlayer:
    one = LedgerPlayer(["http://127.0.0.1:1"], "token", random.Random(1))
    one.client.connected = {"user_id": user}
    one.sent = sent
    one.answers = [Answer(0.0, 0.0, "go", True, v, None) for v in committed]
    return one


def test_a_clean_ledger_passes() -> None:
    entries = [update(1, 1, "a"), update(2, 2, "world"), update(3, 3, "a")]
    found = check_ledger(entries, [row(e) for e in entries], 3, [player("a", 2, [1, 3])])
    assert found.ok and found.acknowledged == 3


def test_each_kind_of_damage_is_named() -> None:
    entries = [update(1, 1, "a"), update(2, 2, "a"), update(4, 4, "a")]
    rows = [row(e) for e in entries] + [{"msg_id": "w:5", "payload": b"{}", "stream_seq": 9}]
    rows.append({"msg_id": "w:6", "payload": b"never", "stream_seq": None})
    dup = StreamEntry(5, "world_update", 4, 3, "a", None, entries[-1].payload)
    found = check_ledger([*entries, dup], rows, 6, [player("a", 2, [1, 2, 7])])
    assert found.missing_acked == ["w:5@9"]
    assert found.unpublished == 1
    assert found.duplicated == [5]
    assert found.version_breaks and "v3->v4 after v2" in found.version_breaks[0]
    assert found.committed_twice == ["a: 4 commits from 2 actions sent"]
    assert found.half_committed and "v7" in found.half_committed[0]
    assert found.stream_version < found.kb_version and not found.ok
