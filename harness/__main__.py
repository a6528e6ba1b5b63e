"""`gaia-harness` (or `python -m harness`): scenario, chaos, sse-restart, soak, bench and narrate commands."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from harness.chaos.single import run_chaos, write_report
from harness.scenario import ExternalTarget, run_scenario


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gaia-harness", description="Multiplayer test harness for GAIA")
    sub = parser.add_subparsers(dest="command", required=True)
    scenario = sub.add_parser("scenario", help="N random players; exit 1 on any divergence or loss")
    scenario.add_argument("--players", type=int, default=8)
    scenario.add_argument("--duration", type=float, default=20.0, help="seconds of play")
    scenario.add_argument("--seed", type=int, default=1)
    scenario.add_argument("--tick", type=float, default=1.0, help="world clock tick of the system it starts")
    scenario.add_argument("--gateway", help="target a running gateway (with --kb and --nats) instead of starting one")
    scenario.add_argument("--kb", default="http://127.0.0.1:8001")
    scenario.add_argument("--nats", default="nats://127.0.0.1:4222")
    chaos = sub.add_parser("chaos", help="players while nats-server, kb and gateway are SIGKILLed and restarted")
    chaos.add_argument("--players", type=int, default=4)
    chaos.add_argument("--duration", type=float, default=30.0)
    chaos.add_argument("--seed", type=int, default=7)
    chaos.add_argument("--fault-every", type=float, default=4.0)
    chaos.add_argument("--write", action="store_true", help="update docs/reliability.md with the figures")
    chaos.add_argument("--cluster", action="store_true",
                       help="3 nats-server nodes, 2 gateways, 2 kb on PostgreSQL; process, database and network faults")
    chaos.add_argument("--faults", help="with --cluster: comma-separated fault names (default: all, then overlapping)")
    chaos.add_argument("--sse", type=int, default=2, help="with --cluster: SSE streams beside the players")
    sse = sub.add_parser("sse-restart", help="Chromium EventSource pages across a gateway SIGKILL and restart")
    sse.add_argument("--pages", type=int, default=5)
    sse.add_argument("--down-events", type=int, default=2, help="events committed while the gateway is down")
    sse.add_argument("--write", action="store_true", help="update docs/reliability.md with the figures")
    soak = sub.add_parser("soak", help="churn: players leave, drop and resume for a while; exit 1 on loss, "
                                       "leak or slow-consumer closes over the threshold")
    soak.add_argument("--players", type=int, default=100, help="players online at any time")
    soak.add_argument("--churn", type=int, default=20, help="players leaving (and joining) per second")
    soak.add_argument("--act-every", type=float, default=1.0, help="seconds between one player's actions")
    soak.add_argument("--sse", type=int, default=2, help="persistent SSE streams")
    soak.add_argument("--chats", type=float, default=1.0, help="POST /chat/unified per second")
    soak.add_argument("--duration", type=float, default=180.0)
    soak.add_argument("--warmup", type=float, default=20.0, help="seconds before the reference memory sample")
    soak.add_argument("--settle", type=float, default=45.0,
                      help="seconds after everyone left, before the leak check (longer than the 30 s keep-alive "
                           "of the gateway's pooled kb connections)")
    soak.add_argument("--seed", type=int, default=7)
    soak.add_argument("--write", action="store_true", help="update docs/reliability.md with the figures")
    bench = sub.add_parser("bench", help="latency, fan-out throughput vs nats-server's WebSocket, capacity")
    bench.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    bench.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    from harness.bench.narrate import add_arguments
    add_arguments(sub.add_parser("narrate", help="the narrator scored on a fixed script: contradictions, leaks, "
                                                 "cut stories, fallbacks, first chunk; the local model or --url"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "scenario":
        target = ExternalTarget(args.gateway, args.kb, args.nats) if args.gateway else None
        report, others, world = asyncio.run(run_scenario(args.players, args.duration, args.seed, target, args.tick))
        print("\n".join(report.lines()))
        print(f"changes by other players seen {others}; autonomous world changes seen {world}")
        ok = report.ok and (args.players < 2 or others > 0)
        print("OK" if ok else "FAILED: divergence, loss or nobody saw anybody")
        sys.exit(0 if ok else 1)
    if args.command == "chaos" and args.cluster:
        run_cluster_chaos_command(args, argv)
    if args.command == "chaos":
        report = asyncio.run(run_chaos(args.players, args.duration, args.seed, fault_every_s=args.fault_every))
        print("\n".join(report.lines()))
        if args.write:
            write_report(report, Path("docs/reliability.md"), "gaia-harness " + " ".join(argv or sys.argv[1:]))
        sys.exit(0 if report.ok else 1)
    if args.command == "sse-restart":
        from harness.chaos.ssebrowser import run_sse_restart
        from harness.chaos.ssebrowser import write_report as write_sse
        sse_report = asyncio.run(run_sse_restart(args.pages, args.down_events))
        print("\n".join(sse_report.lines()))
        if args.write:
            write_sse(sse_report, Path("docs/reliability.md"), "gaia-harness " + " ".join(argv or sys.argv[1:]))
        sys.exit(0 if sse_report.ok else 1)
    if args.command == "soak":
        run_soak_command(args, argv)
    if args.command == "narrate":
        from harness.bench.narrate import run as run_narrate
        sys.exit(run_narrate(args))
    if args.command == "bench":
        from harness.bench.kit import run_load
        from harness.bench.run import run_bench
        sys.exit(run_load(run_bench(quick=args.quick, write=not args.no_write)))


def run_cluster_chaos_command(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Run the cluster chaos, print its summary and fault table, write them on --write; exit 1 on any finding."""
    from harness.chaos.cluster import run_cluster_chaos
    from harness.chaos.clusterreport import lines, table
    from harness.chaos.clusterreport import write_report as write_cluster
    faults = args.faults.split(",") if args.faults else None
    report = asyncio.run(run_cluster_chaos(args.players, args.sse, args.seed, faults))
    print("\n".join([*lines(report), *table(report)]))
    if args.write:
        write_cluster(report, Path("docs/reliability.md"), "gaia-harness " + " ".join(argv or sys.argv[1:]))
    print("OK" if report.ok else "FAILED")
    sys.exit(0 if report.ok else 1)


def run_soak_command(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Run the soak, print its figures and verdicts, write them on --write; exit 1 unless every target is met."""
    from harness.soak.report import write_report as write_soak
    from harness.soak.run import SoakConfig, run_soak
    config = SoakConfig(players=args.players, churn=args.churn, act_every_s=args.act_every, sse=args.sse,
                        chats_per_s=args.chats, duration_s=args.duration, warmup_s=args.warmup,
                        settle_s=args.settle, seed=args.seed)
    report = asyncio.run(run_soak(config))
    print("\n".join(report.lines()))
    for name, value, met in report.verdicts():
        print(f"{'met    ' if met else 'NOT MET'}  {name}: {value}")
    if args.write:
        write_soak(report, Path("docs/reliability.md"), "gaia-harness " + " ".join(argv or sys.argv[1:]))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
