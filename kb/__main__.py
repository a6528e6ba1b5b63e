"""`python -m kb`: run the world service."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from aiohttp import web

from kb import check
from kb.app import create_app
from kb.world.content import ContentError
from shared.auth import refuse_weak_api_key, refuse_weak_jwt_secret
from shared.config import Settings, deprecation_warnings, refuse_dev_secrets
from shared.schemas.actions import ActionError
from shared.service.gcpacer import gc_pacer_ctx
from shared.service.logs import setup_logging
from shared.service.runtime import new_event_loop

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port, configure logging and run the app until SIGINT/SIGTERM; `check DIR` checks content."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        sys.exit(check.main(argv[1:]))
    parser = argparse.ArgumentParser(description="GAIA kb world service (`gaia-kb check DIR`: check content files)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    refuse_dev_secrets(settings)
    refuse_weak_jwt_secret(settings)
    refuse_weak_api_key(settings)
    host, port = args.host or settings.kb_host, args.port or settings.kb_port
    if not settings.kb_advertise_url:
        settings = replace(settings, kb_advertise_url=f"http://{host}:{port}")
    setup_logging()
    for warning in deprecation_warnings():
        log.warning(warning)
    app = create_app(settings)
    if settings.gc_full_every_s > 0:  # 0: CPython's own collector
        app.cleanup_ctx.append(gc_pacer_ctx(settings.gc_full_every_s))
    try:
        web.run_app(app, loop=new_event_loop(settings), host=host, port=port,
                    access_log=None, shutdown_timeout=settings.shutdown_timeout_s, print=None)
    except (ContentError, ActionError) as exc:  # every problem, one per line; `gaia-kb check` says the same
        raise SystemExit(f"kb cannot start: {exc}") from None


if __name__ == "__main__":
    main()
