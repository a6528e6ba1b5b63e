"""A small text/event-stream reader for the legacy SSE routes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import orjson


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its id (if any) and its data."""

    id: str | None
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)


async def read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Yield events as the server dispatches them (comments such as keep-alive pings are skipped)."""
    event_id: str | None = None
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event_id, "\n".join(data))
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
