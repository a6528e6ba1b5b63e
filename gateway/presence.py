"""Reports this gateway's sessions to kb: joins and leaves at once, everything alive periodically."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from gateway.kbclient import KbClient, KbRejected, KbUnavailable
from shared.service.tasks import raise_if_cancelled, wait_event

log = logging.getLogger(__name__)
RENEW_CHUNK = 500


class PresenceReporter:
    """Batches presence changes for kb; what cannot be sent yet waits (kb restarts lose nothing)."""

    def __init__(self, kb: KbClient, gateway_id: str, renew_s: float, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self.shed = 0
        self.kb = kb
        self.gateway_id = gateway_id
        self.renew_s = renew_s
        self.live: dict[str, dict[str, str]] = {}
        self._pending: dict[str, list[dict[str, str]]] = {"join": [], "leave": [], "drop": []}
        self._wake = asyncio.Event()
        self._wake.set()  # the first report goes at once: kb learns this incarnation started (even with no session)
        self._hello = True
        # Sessions kb refused (their user already has the most sessions allowed, counted over
        # every gateway process): told to whoever closes them.
        self.on_refused: Callable[[list[str]], None] = lambda session_ids: None

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
        pending = self._pending[kind]
        pending.append(entry)
        if len(pending) > self.max_pending:
            # kb away for long: the oldest go. Live sessions come back with the next renewal (kb
            # treats an unknown live session as a join); a lost leave ends by kb's renewal timeout.
            del pending[:len(pending) - self.max_pending]
            self.shed += 1
            if self.shed == 1:
                log.warning("presence reports pile up while kb is away; keeping the newest %d per kind",
                            self.max_pending)
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
            try:
                await self.flush(renew)
            except Exception:  # noqa: BLE001 - a bug here must not end presence reporting for good
                raise_if_cancelled()
                log.exception("presence report failed unexpectedly; going on")
                await asyncio.sleep(1.0)

    async def flush(self, renew: bool = False) -> None:
        """Send what is pending (plus every live session when renewing); keep it if kb is away."""
        batch, self._pending = self._pending, {"join": [], "leave": [], "drop": []}
        alive = list(self.live.values()) if renew else []
        try:
            if any(batch.values()) or self._hello:
                answer = await self.kb.presence({"gateway_id": self.gateway_id, "hello": self._hello, **batch})
                self._hello = False
                if answer.get("refused"):
                    self.on_refused(answer["refused"])
            for start in range(0, len(alive), RENEW_CHUNK):
                await self.kb.presence({"gateway_id": self.gateway_id, "alive": alive[start:start + RENEW_CHUNK]})
        except KbUnavailable as exc:
            log.warning("presence report failed (%s); will retry", exc)
            for kind in batch:
                self._pending[kind] = (batch[kind] + self._pending[kind])[-self.max_pending:]
            await asyncio.sleep(0.5)
            self._wake.set()
        except KbRejected as exc:  # a bug on one side or the other: retrying cannot help
            log.error("kb refused a presence report (%d: %s); dropped", exc.status, exc)
