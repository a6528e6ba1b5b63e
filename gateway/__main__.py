"""`python -m gateway`: run the client-facing gateway."""
from __future__ import annotations

import argparse
import sys
import uuid

from aiohttp import web

from gateway.app import create_app
from gateway.workers import WorkerSupervisor
from shared.auth import refuse_weak_jwt_secret
from shared.config import Settings, refuse_dev_secrets
from shared.service.gcpacer import gc_pacer_ctx
from shared.service.logs import setup_logging
from shared.service.runtime import new_event_loop


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port/--id, configure logging and run until SIGINT/SIGTERM.

    With `GAIA_GATEWAY_WORKERS` above 1 this process supervises that many workers on the port
    (gateway/workers.py) instead of serving.
    """
    parser = argparse.ArgumentParser(description="GAIA real-time gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--id", help="gateway id shown in /health and connection ids")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other workers (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    refuse_dev_secrets(settings)
    refuse_weak_jwt_secret(settings)
    setup_logging()
    host, port = args.host or settings.gateway_host, args.port or settings.gateway_port
    if settings.gateway_workers > 1:
        gateway_id = args.id or settings.gateway_id or f"gw{uuid.uuid4().hex[:6]}"
        supervisor = WorkerSupervisor(settings.gateway_workers, ["--host", host, "--port", str(port)], gateway_id,
                                      settings.shutdown_timeout_s + 5.0)
        sys.exit(supervisor.run())
    app = create_app(settings, args.id)
    if settings.gc_full_every_s > 0:  # 0: CPython's own collector
        app.cleanup_ctx.append(gc_pacer_ctx(settings.gc_full_every_s))
    web.run_app(app, loop=new_event_loop(settings), host=host, port=port, access_log=None,
                backlog=settings.listen_backlog, reuse_port=args.reuse_port or None,
                shutdown_timeout=settings.shutdown_timeout_s, print=None)


if __name__ == "__main__":
    main()
