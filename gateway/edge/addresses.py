"""Who is on the other end: the client's address behind trusted proxies, and what each address may open."""
from __future__ import annotations

import ipaddress
from typing import Awaitable, Callable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """GAIA_TRUSTED_PROXIES: addresses or networks (`10.0.0.0/8`, `127.0.0.1`); a bad one fails at start."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def trusted(address: str | None, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str | None:
    """The client: the peer itself, unless the peer is a trusted proxy; then the right-most address of
    X-Forwarded-For (all its header lines joined in order) that is not a trusted proxy (whatever a
    client wrote further left is ignored)."""
    if not forwarded_for or not trusted(peer, proxies):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy we trust wrote garbage: better the proxy than a made-up client
    return peer


def client_address_middleware(proxies: tuple[Network, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Sets `request.remote` to the client's address, so every limit keys on the client, not the proxy."""

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if proxies:
            # Every header line, in order, as one list: a proxy that adds its own line (HAProxy) rather
            # than appending to the client's must not leave the client's own line as the one read.
            forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
            remote = client_address(request.remote, forwarded, proxies)
            if remote is not None and remote != request.remote:
                request = request.clone(remote=remote)
        return await handler(request)

    return middleware


class AddressCounter:
    """Open connections per client address, for a cap on how many one address may hold."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def opened(self, address: str) -> None:
        self._open[address] = self._open.get(address, 0) + 1

    def closed(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)
