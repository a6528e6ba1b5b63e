"""`gaia-harness soak`, small: churn with drops and cursor resumes loses nothing, and the loss check can fail."""
from __future__ import annotations

from harness.checks.loss import StreamMessage, check_chain
from harness.soak.clients import Chain
from harness.soak.run import SoakConfig, run_soak


async def test_a_small_soak_with_drops_and_resumes_loses_nothing_and_reports_every_target() -> None:
    report = await run_soak(SoakConfig(players=8, churn=2, act_every_s=0.5, sse=1, chats_per_s=1, duration_s=6,
                                       warmup_s=2, settle_s=2))
    verdicts = {name: met for name, _, met in report.verdicts()}
    assert report.sessions > 8 + 6 and report.chains > 8 and report.expected > 100, report.lines()
    assert report.lost == report.duplicated == report.out_of_order == report.behind_at_end == 0, report.lines()
    assert report.final_resumes > 0 and report.chats_done > 0 and report.sse_events > 0
    assert verdicts["4408 closes <= 0.5% of sessions"] and report.bus_cuts() == 0
    assert report.needless_resyncs == 0 and report.churn_replays > report.churn_resyncs, report.lines()
    assert report.resumes > 0 and report.churn_replays + report.churn_resyncs <= report.replays + report.resyncs
    assert report.nats_probe_messages == report.published > 0 and report.nats_probe_mb > 0
    assert len(report.table()) > 3 and len(verdicts) == 12
    assert report.worlds is not None and report.worlds.ok, report.worlds  # the sample's worlds equal kb's
    assert set(report.cpu_share) == {"nats-server", "kb", "gateway", "driver"} and report.cpu_share["gateway"] > 0
    assert report.frames_sent >= len(report.latencies_ms) and report.gateway_us_per_frame() > 0, report.lines()


def test_a_chain_resynced_to_the_worlds_last_version_is_caught_up_without_a_later_event() -> None:
    chain = Chain("bob", "t")
    chain.seqs.extend([2, 4])
    chain.cursor = 4
    chain.marks.append((2, {"type": "resync_required", "reason": "behind"}))
    chain.marks.append((2, {"type": "area_of_interest", "snapshot_version": 9}))
    assert chain.caught_up(end_seq=12, last_version=9) and not chain.caught_up(end_seq=12, last_version=10)
    chain.seqs.append(5)  # an event after the snapshot: only its cursor counts now
    chain.cursor = 5
    assert not chain.caught_up(end_seq=12, last_version=9) and chain.caught_up(end_seq=5, last_version=10)
    assert chain.count("resync_required") == 1 and chain.count("resumed") == 0


def test_a_chain_hands_the_check_its_resumes_and_resyncs_in_arrival_order() -> None:
    messages = [StreamMessage(seq, "world_update", seq, None) for seq in range(1, 9)]
    chain = Chain("bob", "t")
    chain.marks.append((0, {"type": "area_of_interest", "snapshot_version": 1}))
    chain.seqs.extend([2, 4])  # 3 never came
    chain.marks.append((2, {"type": "resumed", "to_seq": 4}))
    chain.marks.append((2, {"type": "resync_required", "reason": "behind"}))
    chain.marks.append((2, {"type": "area_of_interest", "snapshot_version": 6}))  # only 2 behind: not due
    chain.seqs.extend([7, 8])
    result = check_chain(messages, chain.frames(), "bob", threshold=3)
    assert result.due - set(chain.seqs) == {3} and result.forgiven == {5, 6} and result.replays == 1
    assert [r.behind for r in result.needless] == [2]
