"""Every piece of kb app state, as typed AppKeys."""
from __future__ import annotations

import asyncio

from aiohttp import web

from kb.outbox import OutboxPublisher
from kb.presence import PresenceBook
from kb.store import Store
from kb.worlds import WorldService
from shared.config import Settings
from shared.natsconn import NatsLink

SETTINGS = web.AppKey("settings", Settings)
NATS = web.AppKey("nats", NatsLink)
STORE = web.AppKey("store", Store)
PUBLISHER = web.AppKey("publisher", OutboxPublisher)
PRESENCE = web.AppKey("presence", PresenceBook)
WORLDS = web.AppKey("worlds", dict[str, WorldService])
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
