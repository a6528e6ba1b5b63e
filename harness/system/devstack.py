"""`make run`: nats-server + kb + gateway on this machine, a dev token printed, Ctrl-C stops all.

Two experiences: wylding-woods (kb/data) and the example studio's tinkers-cellar (examples/worlds, with the
actions examples.tinkers.actions adds), unless GAIA_KB_DATA_DIR / GAIA_ACTION_MODULES say otherwise. A
content file saved while it runs is checked and reloaded (harness/system/contentwatch.py).

With `--local-model` (`make run-llm`) the model server runs beside them and is started again on the
same port when it dies (the gateway tells kb's messages meanwhile); only after it died
MODEL_DEATHS times within MODEL_WINDOW_S does it stay down, the stack still running.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import orjson

import examples
from harness.system.contentwatch import ContentWatch, kb_reloader
from harness.system.llmserver import ALIAS, ModelServer
from harness.system.privatefiles import private_folder, write_private
from harness.system.procs import NatsServer, ServiceProcess, service_env, wait_healthy
from kb.world.content import DATA_DIR, data_dirs
from shared.auth import issue_token
from shared.config import Settings
from shared.natsauth import new_passwords

RUN_ROOT = Path(".run")
MODEL_DEATHS, MODEL_WINDOW_S = 5, 300.0  # the model server dying this often this quickly stays down
MODEL_RESTART_S = 1.0
# Each port `make run` takes, the variable that moves it, and its default.
PORTS = (("gateway_port", "GAIA_GATEWAY_PORT", 8000), ("kb_port", "GAIA_KB_PORT", 8001),
         ("nats_port", "GAIA_NATS_PORT", 4222), ("nats_monitor_port", "GAIA_NATS_MONITOR_PORT", 8222))


def parse_args(argv: list[str] | None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description="Run the whole system locally")
    for dest, variable, default in PORTS:
        try:
            value = int(env.get(variable, default))
        except ValueError:
            parser.error(f"{variable} must be a port number, not {env[variable]!r}")
        parser.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=int, default=value,
                            help=f"default ${variable} or {default}")
    parser.add_argument("--user", default="player1", help="user id of the printed dev token")
    parser.add_argument("--tick", type=float, default=10.0, help="world clock tick in seconds (0: off)")
    parser.add_argument("--local-model", action="store_true",
                        help="narrate with SmolLM2 on llama-cpp-python's server (make run-llm; installed by make llm)")
    return parser.parse_args(argv)


def busy_ports(args: argparse.Namespace) -> list[str]:
    """A message for each port this run needs that is taken (or named twice); empty when all are free."""
    problems, seen = [], {}
    for dest, variable, _ in PORTS:
        port = getattr(args, dest)
        if port in seen:
            problems.append(f"port {port} is given to both {seen[port]} and {variable}")
            continue
        seen[port] = variable
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers bind (asyncio and nats-server set SO_REUSEADDR): a run stopped a moment
            # ago leaves connections in TIME_WAIT, which block no listener and must not block us.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                problems.append(f"port {port} ({variable}) {why}: set {variable} to a free port "
                                f"(e.g. {variable}={port + 100} make run)")
    return problems


def run_dir(args: argparse.Namespace) -> Path:
    """State and logs of this copy: .run/ for the default ports, .run/<gateway port>/ beside it otherwise."""
    return RUN_ROOT if args.gateway_port == 8000 else RUN_ROOT / str(args.gateway_port)


def content_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where the experiences are and which modules add actions: ours and the example's, unless the shell says."""
    env = os.environ if environ is None else environ
    return {"kb_data_dir": env.get("GAIA_KB_DATA_DIR") or f"{DATA_DIR},{examples.WORLDS}",
            "action_modules": env.get("GAIA_ACTION_MODULES", ",".join(examples.ACTION_MODULES))}


def write_credentials(folder: Path, root: Path = RUN_ROOT) -> dict[str, str]:
    """Fresh NATS passwords for this run (never a fixed one), kept for its tools in `nats-credentials.json`.

    Everything under `root` holds them (that file, nats-server's config in `nats/`): 0600 files in
    0700 folders, so no other local user can read kb's right to publish world updates.
    """
    for private in (root, folder, folder / "nats"):
        private_folder(private)
    passwords = new_passwords()
    write_private(folder / "nats-credentials.json", orjson.dumps(passwords).decode())
    return passwords


async def run(args: argparse.Namespace) -> int:
    """Start everything, print how to use it, wait for a signal, stop in reverse order; the exit status."""
    problems = busy_ports(args)
    if problems:
        print("make run cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    folder = run_dir(args)
    passwords = write_credentials(folder)
    nats_server = NatsServer(store_dir=str(folder / "nats"), port=args.nats_port, monitor_port=args.nats_monitor_port,
                             log_path=str(folder / "nats.log"), passwords=passwords)
    gateway_id = f"dev{secrets.token_hex(4)}"  # /health must answer with it: proof it is our gateway
    model = ModelServer(log_path=str(folder / "model-server.log")) if args.local_model else None
    # The local server answers one request at a time: the gateways queue the rest (GAIA_NARRATOR_MAX_INFLIGHT).
    narrator = {"narrator_url": model.url, "narrator_model": ALIAS, "narrator_max_inflight": "1"} if model else {}
    # One gateway process per core on the gateway's port (SO_REUSEPORT) unless GAIA_GATEWAY_WORKERS says otherwise.
    workers = os.environ.get("GAIA_GATEWAY_WORKERS") or str(gateway_workers())
    content = content_settings()
    env = service_env(nats_server.url, args.kb_port, str(folder / "kb.sqlite3"), kb_clock_tick_s=str(args.tick),
                      gateway_port=str(args.gateway_port), gateway_id=gateway_id, gateway_workers=workers,
                      **content, **narrator)
    kb = ServiceProcess("kb", args.kb_port, env, log_path=str(folder / "kb.log"), nats_password=passwords["kb"])
    gateway = ServiceProcess("gateway", args.gateway_port, env, log_path=str(folder / "gateway.log"),
                             nats_password=passwords["gateway"])
    started: list = []
    try:
        if model is not None:
            print(f"starting the local model server ({ALIAS}) at {model.url} ...", flush=True)
            model.start()
        for proc in (nats_server, kb, gateway):
            proc.start()
            started.append(proc)
        await wait_healthy(kb.url)
        health = await wait_healthy(gateway.url)
        ours = str(health.get("gateway_id", "")).startswith(gateway_id)  # a worker answers as <id>-w<n>
        if not ours or any(p.proc is None or p.proc.poll() is not None for p in (kb, gateway)):
            print(f"make run: something else answers on our ports; see {folder}/*.log", file=sys.stderr)
            return 1
        print_banner(args, nats_server, kb, gateway, folder, model)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        keeper = asyncio.create_task(keep_model(model, stop, folder)) if model is not None else None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            content_watch = ContentWatch(data_dirs(content["kb_data_dir"]),
                                         kb_reloader(http, kb.url, Settings.from_env({**os.environ, **env}).kb_api_key),
                                         lambda text: print(text, flush=True))
            watcher = asyncio.create_task(content_watch.run(stop), name="content-watch")
            try:
                return await watch(stop, started, folder)
            finally:
                for task in (keeper, watcher):
                    if task is not None:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
    finally:
        print("\nstopping gateway, kb, nats-server ...", flush=True)
        for proc in reversed(started):
            proc.stop()
        if model is not None:
            model.stop()
        print("stopped.", flush=True)


async def keep_model(model: ModelServer, stop: asyncio.Event, logs: Path) -> None:
    """Start the model server again on its port whenever it dies, unless it keeps dying."""
    deaths: list[float] = []
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if model.proc is None or model.proc.poll() is None:
            continue
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < MODEL_WINDOW_S] + [now]
        if len(deaths) >= MODEL_DEATHS:
            print(f"\nthe model server died {len(deaths)} times in {MODEL_WINDOW_S:.0f} s; it stays down "
                  f"(stories are kb's messages; see {logs}/model-server.log)", file=sys.stderr, flush=True)
            return
        print(f"\nthe model server exited with {model.proc.returncode}; starting it again (stories are kb's "
              f"messages meanwhile; see {logs}/model-server.log)", file=sys.stderr, flush=True)
        await asyncio.sleep(MODEL_RESTART_S)
        try:
            await asyncio.to_thread(model.start)
            print(f"the model server is back at {model.url}", file=sys.stderr, flush=True)
        except (OSError, RuntimeError, TimeoutError) as exc:
            print(f"the model server did not come back: {exc}", file=sys.stderr, flush=True)


async def watch(stop: asyncio.Event, procs: list, logs: Path) -> int:
    """Wait for Ctrl-C (0); if a process dies on its own, say so and stop the rest (1)."""
    while not stop.is_set():
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                print(f"\n{getattr(proc, 'module', 'nats-server')} exited with {proc.proc.returncode}; "
                      f"see {logs}/*.log", file=sys.stderr)
                return 1
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    return 0


def gateway_workers() -> int:
    """The cores this process may run on: `make run`'s default number of gateway processes."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def print_banner(args: argparse.Namespace, nats_server: NatsServer, kb: ServiceProcess, gateway: ServiceProcess,
                 logs: Path, model: ModelServer | None = None) -> None:
    token = issue_token(Settings.from_env(), args.user)
    narrator = (f"\n  model        {model.url}   {ALIAS}, one request at a time; started again when it dies"
                if model is not None else "")
    ws = f"ws://127.0.0.1:{args.gateway_port}/ws/experience?experience=wylding-woods&token={token}"
    print(f"""
GAIA is running (state and logs in {logs}/):
  nats-server  {nats_server.url}   monitoring {nats_server.monitor_url}
               users kb and gateway, passwords generated for this run in {logs}/nats-credentials.json
  kb           {kb.url}/health
  gateway      {gateway.url}/health   {gateway.env.get("GAIA_GATEWAY_WORKERS", "1")} process(es) on its port \
(GAIA_GATEWAY_WORKERS){narrator}

Play in a browser (the live page):
  {gateway.url}/?token={token}
API documents: {gateway.url}/asyncapi.json  {gateway.url}/openapi.json  {kb.url}/openapi.json
Metrics:       curl -H "Authorization: Bearer {gateway.env.get("GAIA_ADMIN_TOKEN", "")}" {gateway.url}/metrics \
(also /debug/event-timings; GAIA_ADMIN_TOKEN, made for this run)   {kb.url}/metrics

Dev token for '{args.user}' (24 h; another user: make token USER=<id>):
  {token}
In a shell:  export TOKEN=$(make -s token USER={args.user})

WebSocket:
  {ws}
Legacy SSE:
  curl -N -H "Authorization: Bearer {token}" "{gateway.url}/sse/experience?experience=wylding-woods"
The example studio's experience, beside it (its own actions: open, close, craft; docs/authoring.md):
  ws://127.0.0.1:{args.gateway_port}/ws/experience?experience=tinkers-cellar&token={token}
Content files are watched: a saved change is checked and reloaded (players get a snapshot), or one line says why not.
Check a world yourself:  make check-world DIR=examples/worlds/tinkers-cellar

Press Ctrl-C to stop.""", flush=True)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GAIA_LOG_LEVEL", "INFO")
    args = parse_args(argv)
    try:
        status = asyncio.run(run(args))
    except KeyboardInterrupt:
        status = 0
    sys.exit(status)


if __name__ == "__main__":
    main()
