"""harness.chaos.clusterreport: issue 37's bound on the next committed action, in the table and its verdict line."""
from __future__ import annotations

from harness.chaos.cluster import ClusterChaosReport, FaultFigures
from harness.chaos.clusterreport import bound_line, lines, table


def report(*faults: tuple[str, float | None]) -> ClusterChaosReport:
    return ClusterChaosReport(players=4, sse=2, netns=True,
                              faults=[FaultFigures(name, next_commit_s=s, whole_s=1.0) for name, s in faults])


def test_a_paused_or_cut_off_leader_is_bound_alone_or_overlapping_and_other_faults_are_not() -> None:
    run = report(("leader-pause", 0.3), ("partition+kb-owner-kill", 12.0), ("gateway-kill", 20.0),
                 ("leader-pause+postgres-restart", None))
    assert bound_line(run).endswith("NOT MET by partition+kb-owner-kill (12.0 s), "
                                    "leader-pause+postgres-restart (not reached)")
    rows = table(run)[2:]
    assert [row.split(" | ")[3] for row in rows] == ["<= 10", "<= 10", "", "<= 10"]
    assert "met by all 1" in bound_line(report(("partition", 9.9), ("kb-owner-kill", 30.0)))
    assert bound_line(run) in lines(run)
