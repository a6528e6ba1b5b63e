"""Reports this gateway's sessions to kb: joins and leaves at once, everything alive periodically."""
from __future__ import annotations

import asyncio
import logging

from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from shared.tasks import wait_event

log = logging.getLogger(__name__)
RENEW_CHUNK = 500


class PresenceReporter:
    """Batches presence changes for kb; what cannot be sent yet waits (kb restarts lose nothing)."""

    def __init__(self, kb: KbClient, gateway_id: str, renew_s: float) -> None:
        self.kb = kb
        self.gateway_id = gateway_id
        self.renew_s = renew_s
        self.live: dict[str, dict[str, str]] = {}
        self._pending: dict[str, list[dict[str, str]]] = {"join": [], "leave": [], "drop": []}
        self._wake = asyncio.Event()

    def join(self, session_id: str, user_id: str, experience: str) -> None:
        entry = {"session_id": session_id, "user_id": user_id, "experience": experience}
        self.live[session_id] = entry
        self._queue("join", entry)

    def leave(self, session_id: str, clean: bool) -> None:
        """A clean close leaves at once; anything else starts kb's grace period."""
        entry = self.live.pop(session_id, None)
        if entry is not None:
            self._queue("leave" if clean else "drop", entry)

    def _queue(self, kind: str, entry: dict[str, str]) -> None:
        self._pending[kind].append(entry)
        self._wake.set()

    async def run(self) -> None:
        """Send queued changes as they come, and renew every live session each renew_s."""
        loop = asyncio.get_running_loop()
        next_renew = loop.time() + self.renew_s
        while True:
            await wait_event(self._wake, max(0.0, next_renew - loop.time()))
            self._wake.clear()
            renew = loop.time() >= next_renew
            if renew:
                next_renew = loop.time() + self.renew_s
            await self.flush(renew)

    async def flush(self, renew: bool = False) -> None:
        """Send what is pending (plus every live session when renewing); keep it if kb is away."""
        batch, self._pending = self._pending, {"join": [], "leave": [], "drop": []}
        alive = list(self.live.values()) if renew else []
        try:
            if any(batch.values()):
                await self.kb.presence({"gateway_id": self.gateway_id, **batch})
            for start in range(0, len(alive), RENEW_CHUNK):
                await self.kb.presence({"gateway_id": self.gateway_id, "alive": alive[start:start + RENEW_CHUNK]})
        except KbUnavailable as exc:
            log.warning("presence report failed (%s); will retry", exc)
            for kind in batch:
                self._pending[kind] = batch[kind] + self._pending[kind]
            await asyncio.sleep(0.5)
            self._wake.set()
        except KbRejected as exc:  # a bug on one side or the other: retrying cannot help
            log.error("kb refused a presence report (%d: %s); dropped", exc.status, exc)
