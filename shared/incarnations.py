"""A gateway process's presence id: its slot (the `--id` it is started with) and when this incarnation began.

A restarted worker comes back with the same slot; kb tells its incarnations apart by the start
time, so a newer one ends the sessions an older one left behind at once (kb/presence.py) instead
of waiting for their renewals to time out. The id is `<slot>#<start ms>.<random>`.
"""
from __future__ import annotations

import secrets
import time

SEPARATOR = "#"


def new_incarnation(slot: str, started_at: float | None = None) -> str:
    """The presence id of a process of `slot` starting now (or at `started_at`, wall clock seconds)."""
    started_ms = int((time.time() if started_at is None else started_at) * 1000)
    return f"{slot}{SEPARATOR}{started_ms}.{secrets.token_hex(3)}"


def slot_and_start(gateway_id: str) -> tuple[str, int]:
    """(slot, start ms) of a presence id; an id without an incarnation is its own slot, started at 0."""
    slot, separator, incarnation = gateway_id.rpartition(SEPARATOR)
    if not separator:
        return gateway_id, 0
    started, _, _ = incarnation.partition(".")
    return (slot, int(started)) if started.isdigit() else (gateway_id, 0)
