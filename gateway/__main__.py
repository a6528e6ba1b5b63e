"""`python -m gateway`: run the client-facing gateway."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from gateway.app import create_app
from gateway.serve import serve
from gateway.workers import SUPERVISOR_PID, WorkerSupervisor, kb_announcer, parent_watch_ctx
from shared.auth import refuse_weak_api_key, refuse_weak_jwt_secret
from shared.config import Settings, deprecation_warnings, refuse_dev_secrets
from shared.schemas.actions import ActionError, load_modules
from shared.service.gcpacer import gc_pacer_ctx
from shared.service.logs import setup_logging
from shared.service.runtime import new_event_loop

log = logging.getLogger(__name__)


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
    refuse_weak_api_key(settings)
    try:  # checked once, before any worker starts: a bad module stops the start with its reason, no crash loop
        load_modules(settings.action_modules)
    except ActionError as exc:
        raise SystemExit(f"gateway cannot start: {exc}") from None
    setup_logging()
    for warning in deprecation_warnings():  # workers get the new names from their supervisor: said once
        log.warning(warning)
    host, port = args.host or settings.gateway_host, args.port or settings.gateway_port
    # The same host and port is the same gateway across restarts: kb ends what its last run left behind.
    gateway_id = args.id or settings.gateway_id or f"{socket.gethostname()}-{port}"
    if settings.gateway_workers > 1:
        supervisor = WorkerSupervisor(settings.gateway_workers, ["--host", host, "--port", str(port)], gateway_id,
                                      settings.shutdown_timeout_s + 5.0,
                                      announce=kb_announcer(settings.kb_url, settings.kb_api_key))
        sys.exit(supervisor.run(host, port))
    app = create_app(settings, gateway_id)
    supervisor_pid = os.environ.get(SUPERVISOR_PID, "")
    if supervisor_pid.isdigit() and not sys.platform.startswith("linux"):  # Linux: PR_SET_PDEATHSIG does it
        app.cleanup_ctx.append(parent_watch_ctx(int(supervisor_pid)))
    if settings.gc_full_every_s > 0:  # 0: CPython's own collector
        app.cleanup_ctx.append(gc_pacer_ctx(settings.gc_full_every_s))
    serve(app, host, port, new_event_loop(settings), reuse_port=args.reuse_port or None)


if __name__ == "__main__":
    main()
