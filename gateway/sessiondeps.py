"""SessionDeps: what every WebSocket session of this process shares, built once per app (gateway/app.py)."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.chat.pipeline import ChatService
from gateway.delivery.tick import SendTicks
from gateway.kbclient import KbClient
from gateway.metrics import GatewayMetrics
from gateway.presence import PresenceReporter
from gateway.registry import SessionRegistry
from gateway.streams.streamset import StreamSet
from gateway.streams.timings import EventTimings
from shared.config import Settings
from shared.natsconn import NatsLink


@dataclass(frozen=True)
class SessionDeps:
    """What every session of this gateway shares (not a transport's: keys.py holds it, and only the app
    may import a transport)."""

    settings: Settings
    kb: KbClient
    link: NatsLink
    streams: StreamSet
    registry: SessionRegistry
    presence: PresenceReporter
    metrics: GatewayMetrics
    chat: ChatService
    ticks: SendTicks
    timings: EventTimings  # the process's event stamps, which every write moves
