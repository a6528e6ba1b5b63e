"""`python -m gateway`: run the client-facing gateway."""
from __future__ import annotations

import argparse

from aiohttp import web

from gateway.app import create_app
from shared.config import Settings, refuse_dev_secrets
from shared.gcpacer import gc_pacer_ctx
from shared.logs import setup_logging
from shared.runtime import new_event_loop


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port/--id, configure logging and run until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="GAIA real-time gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--id", help="gateway id shown in /health and connection ids")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    refuse_dev_secrets(settings)
    setup_logging()
    app = create_app(settings, args.id)
    app.cleanup_ctx.append(gc_pacer_ctx(settings.gc_full_every_s))
    web.run_app(app, loop=new_event_loop(settings), host=args.host or settings.gateway_host,
                port=args.port or settings.gateway_port, access_log=None, backlog=settings.listen_backlog,
                shutdown_timeout=settings.shutdown_timeout_s, print=None)


if __name__ == "__main__":
    main()
