"""What a stream tells its owner, and how a stream started."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class StreamSink(Protocol):
    """What a stream tells its owner (a WebSocket session, an SSE stream or a chat request)."""

    transport: str  # "websocket", "sse", "chat": the label the stream counts its deliveries under

    def on_event(self, seq: int, frame: bytes, event: dict[str, Any]) -> None:
        """This player's copy of the event at stream sequence `seq`."""
        ...

    def on_replayed(self, from_seq: int, to_seq: int, replayed: int) -> None:
        """A replay from the client's cursor met the live stream."""
        ...

    def on_resync(self, reason: str) -> None:
        """The cursor cannot be served: the owner sends `resync_required` and a fresh snapshot."""
        ...

    def on_stalled(self) -> None:
        """Events wait for room and the client took nothing for a long while."""
        ...

    def room(self) -> int:
        """How many more events the sink can queue now without crowding its live traffic."""
        ...


@dataclass(frozen=True)
class OpenResult:
    """How a stream started: `live`, `replay` (catching up in the background), `too_old` or `offline`."""

    kind: str
    cursor: int | None = None
    replay_until: int = 0
