"""Who may connect, written once for every transport: `Edge.admit` runs the same checks in the same
order for a WebSocket, an SSE stream and a chat POST.

The checks that need no token come first (origin, the address's handshake bucket, the connections
the address holds), so a flood or a foreign page costs no token verification and no question to kb.
Each transport answers a refusal in its own terms: the WebSocket refuses the first three in HTTP
before the upgrade and the rest with a close code after it (a browser's WebSocket cannot read an
HTTP error); SSE and the chat POST answer every refusal in HTTP.

The user's limit counts every connection this process admitted for the user and still holds, of
every transport (sockets, SSE streams, chat POSTs), checked once, here; kb also counts a user's
sockets and SSE streams over every gateway process (a socket past it closes with 4409).
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.edge.addresses import AddressCounter
from gateway.edge.buckets import KeyedBuckets
from shared.auth import Identity, TokenError, TokenVerifier, bearer_token
from shared.config import Settings
from shared.schemas.errors import ErrorCode
from shared.service.problems import problem

MAX_EXPERIENCE_ID = 128
TRANSPORTS = ("websocket", "sse", "chat")
CHECKS = ("origin", "rate", "address", "token", "experience", "user")  # the order `admit` runs them in


@dataclass(frozen=True)
class Refusal:
    """Why a connection may not open: the check that refused it, an HTTP status, our error code, a message."""

    check: str
    status: int
    error: str
    message: str

    def response(self) -> web.Response:
        """The refusal as an HTTP error with our JSON body."""
        return problem(self.status, self.error, self.message)


class Edge:
    """The gate of one gateway process: handshake buckets, open connections per address and per user, tokens."""

    def __init__(self, settings: Settings, verifier: TokenVerifier,
                 experiences: Callable[[], Awaitable[set[str] | None]],
                 reserved_ids: Callable[[], Awaitable[set[str]]] | None = None) -> None:
        self.settings = settings
        self.verifier = verifier
        self.experiences = experiences  # the experiences kb serves; None when kb cannot be asked
        self.reserved_ids = reserved_ids  # ids kb keeps for the world and its NPCs: never a player's
        self.addresses = AddressCounter()
        self.users: Counter[tuple[str, str]] = Counter()  # admitted connections still open, by (user, transport)
        self.handshakes = KeyedBuckets(settings.handshakes_per_ip_per_s, settings.handshake_burst)

    @contextlib.asynccontextmanager
    async def admit(self, request: web.Request, transport: str, experience: str) -> AsyncIterator[Identity | Refusal]:
        """Every check, in CHECKS order; yields the first Refusal, or the caller's Identity with the
        connection counted against its address and its user until the block ends."""
        address = request.remote or "?"
        refusal = self.address_refusal(request, address)
        if refusal is not None:
            yield refusal
            return
        self.addresses.opened(address)  # counted before any await, so a burst cannot slip past the cap
        try:
            admitted = await self._checked_identity(request, transport, experience)
            if isinstance(admitted, Refusal):
                yield admitted
                return
            key = (admitted.user_id, transport)
            self.users[key] += 1  # no await since the check: two connections of one user cannot both pass it
            try:
                yield admitted
            finally:
                self.users[key] -= 1
                if self.users[key] <= 0:
                    del self.users[key]
        finally:
            self.addresses.closed(address)

    def origin_allowed(self, request: web.Request) -> bool:
        """Browsers send Origin; when allowed_origins is set, only those may connect."""
        allowed = self.settings.allowed_origins
        origin = request.headers.get("Origin")
        return not allowed or origin is None or origin in allowed

    def address_refusal(self, request: web.Request, address: str) -> Refusal | None:
        """The checks before the token: the origin, the address's handshake bucket, its open connections."""
        if not self.origin_allowed(request):
            return Refusal("origin", 403, "forbidden", "origin not allowed")
        if not self.handshakes.allow(address):
            return Refusal("rate", 429, ErrorCode.RATE_LIMITED, "too many connection attempts; retry later")
        if self.addresses.count(address) >= self.settings.max_connections_per_address:
            return Refusal("address", 429, "too_many_connections", "too many open connections from this address")
        return None

    async def _checked_identity(self, request: web.Request, transport: str, experience: str) -> Identity | Refusal:
        """The checks from the token on: the token, the experience, the user's room; the first refusal, or
        the caller's identity."""
        identity = await self._identify(request, transport)
        if isinstance(identity, Refusal):
            return identity
        return await self.experience_refusal(experience) or self.user_refusal(identity, transport) or identity

    async def _identify(self, request: web.Request, transport: str) -> Identity | Refusal:
        """The caller's identity from `Authorization: Bearer`, or `?token=` but on a chat POST (browsers'
        WebSocket and EventSource cannot set headers; a POST can)."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None and transport != "chat":
            token = request.query.get("token")
        try:
            identity = await self.verifier.verify(token)
        except TokenError as exc:
            return Refusal("token", 401, "unauthorized", str(exc))
        if self.reserved_ids is not None and identity.user_id in await self.reserved_ids():
            # A token for `world` or an NPC would make a player's actions look autonomous to everyone.
            return Refusal("token", 403, ErrorCode.RESERVED_USER_ID, "this user id is reserved for the world")
        return identity

    async def experience_refusal(self, experience: str) -> Refusal | None:
        """None when this experience may be joined: named, on the allow-list if one is set, served by kb
        (when kb can be asked)."""
        if not experience:
            return Refusal("experience", 400, ErrorCode.INVALID_MESSAGE, "the experience query parameter is required")
        if len(experience) > MAX_EXPERIENCE_ID:
            return Refusal("experience", 400, ErrorCode.INVALID_MESSAGE,
                           f"experience ids have at most {MAX_EXPERIENCE_ID} characters")
        allowed = self.settings.allowed_experiences
        if allowed and experience not in allowed:
            return Refusal("experience", 403, "forbidden", "experience not allowed")
        known = await self.experiences()
        if known is not None and experience not in known:
            return Refusal("experience", 404, ErrorCode.UNKNOWN_EXPERIENCE, f"no experience called {experience[:64]!r}")
        return None

    def user_refusal(self, identity: Identity, transport: str) -> Refusal | None:
        """None when the user has room for one more connection: fewer than max_connections_per_user of
        every transport here, and for an SSE stream fewer than max_sse_per_user streams."""
        user = identity.user_id
        if self.user_connections(user) >= self.settings.max_connections_per_user:
            return Refusal("user", 429, ErrorCode.TOO_MANY_SESSIONS, "too many connections for this user")
        if transport == "sse" and self.user_connections(user, "sse") >= self.settings.max_sse_per_user:
            return Refusal("user", 429, "too_many_streams", "too many SSE streams for this user")
        return None

    def user_connections(self, user_id: str, transport: str | None = None) -> int:
        """Connections of this user admitted here and still open: of one transport, or of every one."""
        if transport is not None:
            return self.users[(user_id, transport)]
        return sum(self.users[(user_id, each)] for each in TRANSPORTS)


def parse_cursor(raw: str | None) -> int | None:
    """A `last_seq`/`Last-Event-ID` value: a non-negative integer, or ValueError."""
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0 or value > 2**63 - 1:
        raise ValueError("out of range")
    return value
