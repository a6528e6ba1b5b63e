"""Every piece of gateway app state, as typed AppKeys."""
from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.chat.pipeline import ChatService
from gateway.delivery.tick import SendTicks
from gateway.edge.admission import Edge
from gateway.edge.buckets import KeyedBuckets
from gateway.edge.pending import PendingRequests
from gateway.kbclient import KbClient
from gateway.metrics import GatewayMetrics
from gateway.presence import PresenceReporter
from gateway.registry import SessionRegistry
from gateway.sessiondeps import SessionDeps
from gateway.streams.streamset import StreamSet
from shared.config import Settings
from shared.natsconn import NatsLink

SETTINGS = web.AppKey("settings", Settings)
NATS = web.AppKey("nats", NatsLink)
KB = web.AppKey("kb", KbClient)
REGISTRY = web.AppKey("registry", SessionRegistry)
STREAMS = web.AppKey("streams", StreamSet)
PRESENCE = web.AppKey("presence", PresenceReporter)
GATEWAY_ID = web.AppKey("gateway_id", str)
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
METRICS = web.AppKey("metrics", GatewayMetrics)
CHAT = web.AppKey("chat", ChatService)
EDGE = web.AppKey("edge", Edge)
CHAT_LIMITS = web.AppKey("chat_limits", KeyedBuckets)
TICKS = web.AppKey("ticks", SendTicks)
SESSION_DEPS = web.AppKey("session_deps", SessionDeps)
PENDING = web.AppKey("pending", PendingRequests)
