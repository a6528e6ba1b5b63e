"""A store that cannot be reached (PostgreSQL restarting, a connection cut) answers 503, not a 500 with a traceback.

The gateway tells its players `kb_unavailable` and they retry; kb logs one line per outage that
names the cause, and one when the store answers again, never a traceback per request.
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Any

import asyncpg
from aiohttp import web

from shared.service.problems import problem

log = logging.getLogger(__name__)
STORE_DOWN = (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.InterfaceError, sqlite3.OperationalError)
RETRY_AFTER_S = "1"


class StoreOutage:
    """Remembers whether the store is down, so an outage is logged once, not once per request."""

    def __init__(self) -> None:
        self.down = False
        self.refused = 0

    def failed(self, exc: BaseException) -> None:
        """A request found the store unreachable."""
        self.refused += 1
        if not self.down:
            self.down = True
            log.warning("the store cannot be reached (%s: %s); answering 503 until it can",
                        type(exc).__name__, str(exc)[:200])

    def answered(self) -> None:
        """A request went through: the outage, if any, is over."""
        if self.down:
            self.down = False
            log.warning("the store answers again after %d requests were refused", self.refused)
            self.refused = 0


def store_errors_middleware(outage: StoreOutage) -> Any:
    """503 `store_unavailable` (with Retry-After) for a request the store could not serve."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except STORE_DOWN as exc:
            outage.failed(exc)
            refused = problem(503, "store_unavailable", "the world's store cannot be reached; retry shortly")
            refused.headers["Retry-After"] = RETRY_AFTER_S
            return refused
        outage.answered()
        return response

    return middleware
