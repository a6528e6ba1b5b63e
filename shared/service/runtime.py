"""The event loop both services run on: uvloop when installed and wanted (GAIA_UVLOOP, on by default)."""
from __future__ import annotations

import asyncio
import logging

from shared.config import Settings

log = logging.getLogger(__name__)


def new_event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """uvloop's loop if GAIA_UVLOOP is on (default) and uvloop is importable, else asyncio's."""
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
