"""Every piece of kb app state, as typed AppKeys."""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from kb.metrics import KbMetrics
from kb.outbox import OutboxPublisher
from kb.ownership import WorldOwnership
from kb.presence import PresenceBook
from kb.stores import Store
from kb.worldservice import WorldService
from shared.config import Settings
from shared.natsconn import NatsLink

SETTINGS = web.AppKey("settings", Settings)
NATS = web.AppKey("nats", NatsLink)
STORE = web.AppKey("store", Store)
PUBLISHER = web.AppKey("publisher", OutboxPublisher)
PRESENCE = web.AppKey("presence", PresenceBook)
WORLDS = web.AppKey("worlds", dict[str, WorldService])
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
OWNERSHIP = web.AppKey("ownership", WorldOwnership)
FORWARD_HTTP = web.AppKey("forward_http", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", KbMetrics)
