"""Chaos: players keep playing while nats-server, kb and the gateway are SIGKILLed and restarted."""
from __future__ import annotations

from harness.chaos.single import run_chaos


async def test_no_event_lost_duplicated_or_reordered_through_random_crashes() -> None:
    report = await run_chaos(players=3, duration_s=16, seed=11, fault_every_s=3.0)
    print("\n".join(report.lines()))
    assert len(report.faults) >= 3 and set(report.faults) == {"nats", "gateway", "kb"}
    assert report.delivered > 0 and report.expected > 0 and report.reconnects > 0
    assert report.lost == 0 and report.duplicated == 0 and report.out_of_order == 0
    assert report.repairs == 0, "no player's version chain broke (no get_state was needed)"
    assert report.diverged == 0, "every player's delta-built world equals kb's at the end, unrefreshed"
    assert report.ok
