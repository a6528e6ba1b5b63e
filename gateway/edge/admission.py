"""Who may connect, written once for both transports: origin, address limits, the token, the experience.

Each check answers in the transport's terms by the caller: a WebSocket handshake that fails
before the upgrade is an HTTP error, after it a close code; an SSE request is an HTTP error.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from aiohttp import web

from gateway.edge.addresses import AddressCounter
from gateway.edge.buckets import KeyedBuckets
from gateway.kbclient import KbClient
from shared.auth import Identity, TokenError, TokenVerifier, bearer_token
from shared.config import Settings
from shared.schemas.errors import ErrorCode
from shared.service.problems import refuse

MAX_EXPERIENCE_ID = 128
REFUSALS: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized,
                                                403: web.HTTPForbidden, 404: web.HTTPNotFound}


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on: an HTTP status, our error code, and a message for the client."""

    status: int
    error: str
    message: str


class Edge:
    """The gate of one gateway process: open connections per address, handshake buckets, tokens."""

    def __init__(self, settings: Settings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.verifier = verifier
        self.addresses = AddressCounter()
        self.handshakes = KeyedBuckets(settings.handshakes_per_ip_per_s, settings.handshake_burst)

    def origin_allowed(self, request: web.Request) -> bool:
        """Browsers send Origin; when allowed_origins is set, only those may connect."""
        allowed = self.settings.allowed_origins
        origin = request.headers.get("Origin")
        return not allowed or origin is None or origin in allowed

    def check_handshake_rate(self, request: web.Request) -> None:
        """429 when this client address opens connections faster than its bucket allows."""
        if not self.handshakes.allow(request.remote or "?"):
            raise refuse(web.HTTPTooManyRequests, ErrorCode.RATE_LIMITED, "too many connection attempts; retry later")

    def refuse_crowded_address(self, request: web.Request) -> None:
        """429 before anything is opened when one client address already holds its share of connections."""
        if self.addresses.count(request.remote or "?") >= self.settings.max_connections_per_address:
            raise refuse(web.HTTPTooManyRequests, "too_many_connections", "too many open connections from this address")

    @contextlib.contextmanager
    def counted_connection(self, request: web.Request) -> Iterator[None]:
        """Count a connection against its client address for as long as it is open."""
        address = request.remote or "?"
        self.addresses.opened(address)
        try:
            yield
        finally:
            self.addresses.closed(address)

    async def identify(self, request: web.Request, allow_query: bool) -> Identity:
        """The caller's identity from `Authorization: Bearer` (or `?token=` where the client cannot set
        headers: browsers' WebSocket and EventSource); raises TokenError."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None and allow_query:
            token = request.query.get("token")
        return await self.verifier.verify(token)

    async def identify_or_refuse(self, request: web.Request, allow_query: bool) -> Identity:
        """`identify` for transports that answer in HTTP: a bad token raises a 401 with our error body."""
        try:
            return await self.identify(request, allow_query)
        except TokenError as exc:
            raise refuse(web.HTTPUnauthorized, "unauthorized", str(exc)) from None

    async def experience_refusal(self, experience: str, kb: KbClient) -> Refusal | None:
        """None when this experience may be joined: named, on the allow-list if one is set, served by kb
        (when kb can be asked)."""
        if not experience:
            return Refusal(400, ErrorCode.INVALID_MESSAGE, "the experience query parameter is required")
        if len(experience) > MAX_EXPERIENCE_ID:
            return Refusal(400, ErrorCode.INVALID_MESSAGE,
                           f"experience ids have at most {MAX_EXPERIENCE_ID} characters")
        allowed = self.settings.allowed_experiences
        if allowed and experience not in allowed:
            return Refusal(403, "forbidden", "experience not allowed")
        known = await kb.experiences()
        if known is not None and experience not in known:
            return Refusal(404, ErrorCode.UNKNOWN_EXPERIENCE, f"no experience called {experience[:64]!r}")
        return None

    async def admit_experience(self, experience: str, kb: KbClient) -> None:
        """`experience_refusal` for transports that answer in HTTP: raises the refusal with our error body."""
        refusal = await self.experience_refusal(experience, kb)
        if refusal is not None:
            raise refuse(REFUSALS[refusal.status], refusal.error, refusal.message)


def parse_cursor(raw: str | None) -> int | None:
    """A `last_seq`/`Last-Event-ID` value: a non-negative integer, or ValueError."""
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0 or value > 2**63 - 1:
        raise ValueError("out of range")
    return value
