"""`make run`: nats-server + kb + gateway on this machine, a dev token printed, Ctrl-C stops all."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson

from harness.procs import NatsServer, ServiceProcess, service_env, wait_healthy
from shared.natsauth import new_passwords
from shared.auth import issue_token
from shared.config import Settings

RUN_DIR = Path(".run")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the whole system locally")
    parser.add_argument("--nats-port", type=int, default=4222)
    parser.add_argument("--kb-port", type=int, default=8001)
    parser.add_argument("--gateway-port", type=int, default=8000)
    parser.add_argument("--user", default="player1", help="user id of the printed dev token")
    parser.add_argument("--tick", type=float, default=10.0, help="world clock tick in seconds (0: off)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Start everything, print how to use it, wait for a signal, stop in reverse order."""
    RUN_DIR.mkdir(exist_ok=True)
    # Fresh credentials every run (never a fixed password): kb and the gateway, nobody else.
    passwords = new_passwords()
    secret = RUN_DIR / "nats-credentials.json"
    secret.write_text(orjson.dumps(passwords).decode())
    secret.chmod(0o600)
    nats_server = NatsServer(store_dir=str(RUN_DIR / "nats"), port=args.nats_port, monitor_port=8222,
                             log_path=str(RUN_DIR / "nats.log"), passwords=passwords)
    env = service_env(nats_server.url, args.kb_port, str(RUN_DIR / "kb.sqlite3"), kb_clock_tick_s=str(args.tick),
                      gateway_port=str(args.gateway_port))
    kb = ServiceProcess("kb", args.kb_port, env, log_path=str(RUN_DIR / "kb.log"), nats_password=passwords["kb"])
    gateway = ServiceProcess("gateway", args.gateway_port, env, log_path=str(RUN_DIR / "gateway.log"),
                             nats_password=passwords["gateway"])
    started = []
    try:
        for proc in (nats_server, kb, gateway):
            proc.start()
            started.append(proc)
        await wait_healthy(kb.url)
        await wait_healthy(gateway.url)
        print_banner(args, nats_server, kb, gateway)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await watch(stop, started)
    finally:
        print("\nstopping gateway, kb, nats-server ...", flush=True)
        for proc in reversed(started):
            proc.stop()
        print("stopped.", flush=True)


async def watch(stop: asyncio.Event, procs: list) -> None:
    """Wait for Ctrl-C; if a process dies on its own, say so and stop the rest."""
    while not stop.is_set():
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                print(f"\n{getattr(proc, 'module', 'nats-server')} exited with {proc.proc.returncode}; "
                      f"see .run/*.log", file=sys.stderr)
                return
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


def print_banner(args: argparse.Namespace, nats_server: NatsServer, kb: ServiceProcess, gateway: ServiceProcess) -> None:
    token = issue_token(Settings.from_env(), args.user)
    ws = f"ws://127.0.0.1:{args.gateway_port}/ws/experience?experience=wylding-woods&token={token}"
    print(f"""
GAIA is running (logs in .run/):
  nats-server  {nats_server.url}   monitoring {nats_server.monitor_url}
               users kb and gateway, passwords generated for this run in .run/nats-credentials.json
  kb           {kb.url}/health
  gateway      {gateway.url}/health

Play in a browser (the live page):
  {gateway.url}/?token={token}
API documents: {gateway.url}/asyncapi.json  {gateway.url}/openapi.json  {kb.url}/openapi.json
Metrics:       {gateway.url}/metrics  {kb.url}/metrics

Dev token for '{args.user}' (24 h; another user: make token USER=<id>):
  {token}

WebSocket:
  {ws}
Legacy SSE:
  curl -N -H "Authorization: Bearer {token}" "{gateway.url}/sse/experience?experience=wylding-woods"

Press Ctrl-C to stop.""", flush=True)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GAIA_LOG_LEVEL", "INFO")
    try:
        asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
