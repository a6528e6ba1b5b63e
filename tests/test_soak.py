"""`gaia-harness soak`, small: churn with drops and cursor resumes loses nothing, and the loss check can fail."""
from __future__ import annotations

from harness.soak import SoakConfig, run_soak
from harness.soakclients import Chain
from harness.verify import StreamMessage, due_and_replaced


async def test_a_small_soak_with_drops_and_resumes_loses_nothing_and_reports_every_target() -> None:
    report = await run_soak(SoakConfig(players=8, churn=2, act_every_s=0.5, sse=1, chats_per_s=1, duration_s=6,
                                       warmup_s=2, settle_s=2))
    verdicts = {name: met for name, _, met in report.verdicts()}
    assert report.sessions > 8 + 6 and report.chains > 8 and report.expected > 100, report.lines()
    assert report.lost == report.duplicated == report.out_of_order == report.behind_at_end == 0, report.lines()
    assert report.final_resumes > 0 and report.chats_done > 0 and report.sse_events > 0
    assert verdicts["4408 closes <= 0.5% of sessions"] and report.bus_cuts() == 0
    assert len(report.table()) > 3 and len(verdicts) == 8


def test_the_chain_check_counts_a_missing_event_as_lost_and_a_resync_as_replaced() -> None:
    messages = [StreamMessage(seq, "world_update", seq, None) for seq in range(1, 8)]
    chain = Chain("bob", "t")
    chain.marks.append((0, {"type": "area_of_interest", "snapshot_version": 1}))
    chain.seqs.extend([2, 4])  # 3 never came
    chain.marks.append((2, {"type": "resync_required", "snapshot_version": None}))
    chain.marks.append((2, {"type": "area_of_interest", "snapshot_version": 6}))
    chain.seqs.extend([7])
    due, replaced = due_and_replaced(messages, chain.frames(), "bob")
    assert due - set(chain.seqs) - replaced == {3} and replaced == {5, 6}
