"""Lease mode: a request for a world this kb does not own goes to the kb that does."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from kb.keys import FORWARD_HTTP, OWNERSHIP, SETTINGS, WORLDS
from kb.worldservice import WorldService
from shared.service.problems import problem

log = logging.getLogger(__name__)
FORWARDED = "X-Gaia-Forwarded"


async def find_owner(request: web.Request, experience: str, deadline: float) -> str | None:
    """None when this process owns the world (now, or after waiting out a hand-over), else the owner's URL.

    LookupError when nobody owns it by the deadline (NATS away, or every kb down but us).
    """
    ownership = request.app[OWNERSHIP]
    forwarded = FORWARDED in request.headers
    while True:
        if ownership.owns(experience):
            return None
        url = await ownership.owner_url(experience)
        # A forwarded request is never forwarded again: the owner we were told of is moving.
        if url and url != ownership.my_url and not forwarded:
            return url
        if time.monotonic() > deadline:
            raise LookupError(experience)
        await asyncio.sleep(0.1)


def handover_deadline(request: web.Request) -> float:
    """How long a request may wait for a world to get an owner: one lease time and a little."""
    return time.monotonic() + request.app[SETTINGS].kb_lease_ttl_s + 1.0


async def forward(request: web.Request, owner_url: str, body: bytes) -> web.Response | None:
    """Send the request on to the owner and hand its answer back; None if the owner refused the connection."""
    http = request.app[FORWARD_HTTP]
    headers = {"X-API-Key": request.app[SETTINGS].kb_api_key, FORWARDED: "1", "Content-Type": "application/json"}
    try:
        async with http.request(request.method, owner_url + request.path_qs, data=body or None,
                                headers=headers) as resp:
            payload = await resp.read()
            return web.Response(body=payload, status=resp.status, content_type="application/json")
    except aiohttp.ClientConnectorError:
        return None  # nothing was sent: the owner is gone and its lease is about to lapse
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("forward of %s to %s failed: %s", request.path, owner_url, type(exc).__name__)
        return problem(503, "kb_unavailable", "the kb that owns this world did not answer")


async def to_owner(request: web.Request, experience: str, body: bytes) -> web.Response | None:
    """Forward to the world's owner, waiting out a hand-over; None if this process became the owner."""
    deadline = handover_deadline(request)
    while True:
        try:
            owner = await find_owner(request, experience, deadline)
        except LookupError:
            return problem(503, "kb_unavailable", f"no kb owns {experience[:64]!r} right now; retry")
        if owner is None:
            return None
        answer = await forward(request, owner, body)
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            return problem(503, "kb_unavailable", f"the owner of {experience[:64]!r} is down; retry")
        await asyncio.sleep(0.1)


async def local_world_or_forward(request: web.Request) -> WorldService | web.Response:
    """This kb's WorldService for the request's experience, or the owner's (or an error's) response."""
    experience = request.match_info["experience"]
    world = request.app[WORLDS].get(experience)
    if world is None:
        return problem(404, "unknown_experience", f"no experience called {experience[:64]!r}")
    answer = await to_owner(request, experience, await request.read())
    return world if answer is None else answer


async def forward_presence(request: web.Request, body: dict[str, Any]
                           ) -> tuple[dict[str, Any], dict[str, Any], list[str]] | web.Response:
    """Split a presence report by owner and send on the parts this kb does not own.

    Returns the part to apply here and the owners' `present` and `refused` answers for the rest,
    or the error response when an owner could not take its part (the gateway then sends it all again).
    """
    ownership, worlds = request.app[OWNERSHIP], request.app[WORLDS]
    kinds = ("join", "alive", "leave", "drop")
    remote = {e for k in kinds for s in body[k] if (e := s["experience"]) in worlds and not ownership.owns(e)}
    if body["hello"]:  # a restarted gateway: every owner must learn of it, whoever holds its old sessions
        remote |= {e for e in worlds if not ownership.owns(e)}
    present: dict[str, int] = {}
    refused: list[str] = []
    for experience in sorted(remote):
        part = {"gateway_id": body["gateway_id"], "hello": body["hello"],
                **{k: [s for s in body[k] if s["experience"] == experience] for k in kinds}}
        answer = await to_owner(request, experience, orjson.dumps(part))
        if answer is None:  # became ours while we looked
            remote.discard(experience)
            continue
        if answer.status != 200:
            return answer
        assert isinstance(answer.body, bytes)
        answered = orjson.loads(answer.body)
        present.update(answered.get("present", {}))
        refused += answered.get("refused", [])
    local = {"gateway_id": body["gateway_id"], "hello": body["hello"],
             **{k: [s for s in body[k] if s["experience"] not in remote] for k in kinds}}
    return local, present, refused
