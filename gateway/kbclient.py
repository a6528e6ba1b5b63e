"""The gateway's one pooled HTTP client for kb, with timeouts and the service key."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp
import orjson

from gateway.singleflight import SingleFlight
from shared.config import Settings
from shared.schemas.kbapi import MAX_VIEWS

log = logging.getLogger(__name__)
EXPERIENCES_TTL_S = 30.0


def seg(value: str) -> str:
    """One URL path segment from input: every character that could change the path is escaped."""
    return quote(value, safe="")


class KbUnavailable(Exception):
    """kb did not answer in time, refused the connection or failed on its side (5xx)."""


class KbRejected(Exception):
    """kb answered with a client error (4xx): the request itself was wrong."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", f"kb answered {status}"))
        self.status = status
        self.body = body


Post = Callable[[str, list[dict[str, str]]], Awaitable[dict[str, Any]]]


class ViewBatcher:
    """Collects sessions' snapshot requests per experience and sends each batch as one POST .../views.

    At most one POST per experience is in flight: requests that arrive meanwhile wait for it and go
    together in the next (a full batch, MAX_VIEWS, goes at once). A lone connect waits for nothing but
    the end of its own turn of the loop; a storm of N connects costs kb and the gateway a few requests,
    not one per loop turn (at 400 connects/s that was about 1.5 requests per connect).
    """

    def __init__(self, post: Post) -> None:
        self.post = post
        self.requests = 0
        self._waiting: dict[str, list[tuple[dict[str, str], asyncio.Future[dict[str, Any]]]]] = {}
        self._in_flight: dict[str, int] = {}  # experience -> POSTs under way
        self._tasks: set[asyncio.Task[None]] = set()

    def view(self, experience: str, user_id: str, session_id: str, gateway_id: str) -> asyncio.Future[dict[str, Any]]:
        """The session's area_of_interest (it joins kb's presence with it); KbRejected if refused."""
        loop = asyncio.get_running_loop()
        batch = self._waiting.get(experience)
        if batch is None:
            batch = self._waiting[experience] = []
            if not self._in_flight.get(experience):
                loop.call_soon(self._send, experience)
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        batch.append(({"user_id": user_id, "session_id": session_id, "gateway_id": gateway_id}, answer))
        if len(batch) >= MAX_VIEWS:
            self._send(experience)
        return answer

    def _send(self, experience: str) -> None:
        batch = self._waiting.pop(experience, None)
        if batch:
            self._in_flight[experience] = self._in_flight.get(experience, 0) + 1
            task = asyncio.get_running_loop().create_task(self._post(experience, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _sent(self, experience: str) -> None:
        """A POST ended: the requests that waited for it go now."""
        left = self._in_flight.get(experience, 1) - 1
        if left > 0:
            self._in_flight[experience] = left
        else:
            self._in_flight.pop(experience, None)
            self._send(experience)

    async def _post(self, experience: str, batch: list[tuple[dict[str, str], asyncio.Future[dict[str, Any]]]]) -> None:
        self.requests += 1
        try:
            self._answer(batch, await self.post(experience, [entry for entry, _ in batch]))
        except (KbUnavailable, KbRejected, KeyError, TypeError) as exc:
            failure = exc if isinstance(exc, (KbUnavailable, KbRejected)) else KbUnavailable(f"kb views: {exc!r}")
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(failure)
        except asyncio.CancelledError:  # the gateway stops: nobody waits for these any more
            for _, answer in batch:
                answer.cancel()
            raise
        finally:
            self._sent(experience)

    @staticmethod
    def _answer(batch: list[tuple[dict[str, str], asyncio.Future[dict[str, Any]]]], body: dict[str, Any]) -> None:
        """Each session its own view, in the order asked."""
        views = body["views"]
        if len(views) != len(batch):
            raise KbUnavailable(f"kb answered {len(views)} views for {len(batch)} sessions")
        for (_, answer), view in zip(batch, views, strict=True):
            if answer.done():
                continue  # its session went away meanwhile
            if "error" in view:
                answer.set_exception(KbRejected(429, view))
            else:
                answer.set_result(view)


class KbClient:
    """Calls kb's HTTP API on behalf of authenticated users."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Several kb URLs (comma-separated) are tried in turn when one refuses connections.
        self.bases = [url.strip().rstrip("/") for url in settings.kb_url.split(",") if url.strip()]
        self._current = 0
        timeout = aiohttp.ClientTimeout(total=settings.kb_timeout_s, connect=min(2.0, settings.kb_timeout_s))
        self.http = aiohttp.ClientSession(
            timeout=timeout, headers={"X-API-Key": settings.kb_api_key},
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            json_serialize=lambda obj: orjson.dumps(obj).decode())
        self._experiences: set[str] | None = None
        self._reserved: set[str] = set()  # user ids kb keeps for the world and its NPCs
        self._added: dict[str, tuple[str, ...]] = {}  # experience -> the added actions it offers
        self._experiences_at = 0.0
        self._asking: SingleFlight[str, set[str] | None] = SingleFlight()
        self.batcher = ViewBatcher(self.views)

    async def close(self) -> None:
        await self.http.close()

    @property
    def base(self) -> str:
        return self.bases[self._current]

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        for attempt in range(len(self.bases)):
            try:
                async with self.http.request(method, self.base + path, json=body) as resp:
                    data = orjson.loads(await resp.read())
                    status = resp.status
                break
            except aiohttp.ClientConnectorError as exc:
                # Refused before anything was sent: safe to try the next kb, even for an action.
                self._current = (self._current + 1) % len(self.bases)
                if attempt == len(self.bases) - 1:
                    raise KbUnavailable(f"kb {method} {path.split('/')[1]}: {type(exc).__name__}") from exc
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                raise KbUnavailable(f"kb {method} {path.split('/')[1]}: {type(exc).__name__}") from exc
        if status >= 500:
            raise KbUnavailable(f"kb answered {status}")
        if status >= 400:
            raise KbRejected(status, data if isinstance(data, dict) else {})
        return data

    async def act(self, experience: str, user_id: str, args: dict[str, Any], trace_id: str) -> dict[str, Any]:
        """POST an action; returns {success, message, snapshot_version, changes}."""
        body = {**args, "user_id": user_id, "trace_id": trace_id}
        return await self._call("POST", f"/experiences/{seg(experience)}/actions", body)

    async def state(self, experience: str, user_id: str, session_id: str | None = None,
                    gateway_id: str | None = None) -> dict[str, Any]:
        """The player's area_of_interest frame; with a session id kb also marks it present (and
        the request goes in one batch with the other sessions asking in the same turn)."""
        if session_id:
            return await self.batcher.view(experience, user_id, session_id, gateway_id or "")
        return await self._call("GET", f"/experiences/{seg(experience)}/players/{seg(user_id)}/state")

    async def views(self, experience: str, sessions: list[dict[str, str]]) -> dict[str, Any]:
        """POST several sessions' snapshot requests at once: {"views": [...]} in the same order."""
        return await self._call("POST", f"/experiences/{seg(experience)}/views", {"sessions": sessions})

    async def presence(self, update: dict[str, Any]) -> dict[str, Any]:
        """Report joined/left/dropped/alive sessions."""
        return await self._call("POST", "/presence", update)

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def experiences(self) -> set[str] | None:
        """Experiences kb serves (cached for a while); None if kb cannot be asked right now.

        One question at a time: a connect storm on a fresh gateway waits for one answer instead of
        asking kb once per socket.
        """
        if self._experiences is not None and time.monotonic() - self._experiences_at < EXPERIENCES_TTL_S:
            return self._experiences
        return await self._asking.ask("experiences", self._ask_experiences)

    async def _ask_experiences(self) -> set[str] | None:
        try:
            health = await self.health()
        except (KbUnavailable, KbRejected):
            return self._experiences
        found = set(health.get("experiences", {}))
        self._reserved = set(health.get("reserved_user_ids", []))
        self._added = {e: tuple(names) for e, names in health.get("actions", {}).items()}
        self._experiences, self._experiences_at = found, time.monotonic()
        return found

    async def added_actions(self, experience: str) -> tuple[str, ...]:
        """The actions a game added that this experience offers, as kb last said (asked with the experiences)."""
        await self.experiences()
        return self._added.get(experience, ())

    async def reserved_user_ids(self) -> set[str]:
        """User ids no player may have (the world's actor, every NPC), as kb last said (asked with the experiences)."""
        await self.experiences()
        return self._reserved
