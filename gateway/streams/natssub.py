"""The lightest core subscription nats-py can hold: messages handed to a plain function as they are read.

nats-py gives every subscription with a callback an asyncio.Queue and a task that waits on it, and
wakes that task once per message: about 3 KB and a task switch per message, per subscription. A
gateway holds one subscription per session (the product's design), so that is 30 MB and most of
a session's share of a delivery at 10,000 sessions. A `DirectSubscription` keeps nats-py's
subscription (its SUB, its sid, its reconnect replay, unsubscribe and close) but hands each message
to a synchronous function in the read loop's own turn: no queue, no task, no switch.

The function must not block or await; whatever it needs to do later, it schedules. What it cannot
take must be kept by its owner (the stream holds, the session's send queue is bounded). Built on
nats-py's Subscription internals (`_pending_queue`, `_subs`, `_send_subscribe`), so setup.cfg pins
nats-py to the minor version this was written against, and tests cover subscribe, delivery,
unsubscribe, a reconnect and a drain.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionDrainingError

log = logging.getLogger(__name__)


class _Handoff:
    """Stands where nats-py keeps a subscription's queue: `put_nowait` delivers at once."""

    __slots__ = ("sub", "on_msg")

    def __init__(self, sub: Subscription, on_msg: Callable[[Msg], None]) -> None:
        self.sub = sub
        self.on_msg = on_msg

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # nats-py counted it as pending just before
        self.deliver(msg)

    def deliver(self, msg: Msg) -> None:
        """Hand a message to the handler now (gateway/streams/natscopies.py calls this for every copy it reads)."""
        try:
            self.on_msg(msg)
        except Exception:  # noqa: BLE001 - an error here must not reach nats-py's read loop
            log.exception("message handler for %s failed", self.sub.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        """Nothing is queued, so nothing is ever pending."""

    async def join(self) -> None:
        """A drain waits for nothing: every message was handled when it was read."""


class DirectSubscription(Subscription):
    """A nats-py core subscription that calls `on_msg(msg)` synchronously for each message."""

    def __init__(self, conn: NATS, sid: int, subject: str, on_msg: Callable[[Msg], None],
                 pending_bytes_limit: int) -> None:
        super().__init__(conn, sid, subject, pending_msgs_limit=1, pending_bytes_limit=pending_bytes_limit)
        self.handoff = _Handoff(self, on_msg)
        self._pending_queue = self.handoff  # type: ignore[assignment]
        self._pending_next_msgs_calls = None  # type: ignore[assignment]  # nats-py internals (pinned)


async def subscribe_direct(nc: NATS, subject: str, on_msg: Callable[[Msg], None],
                           pending_bytes_limit: int = 0) -> Subscription:
    """Subscribe with a synchronous handler (see the module's note); unsubscribe as usual.

    `pending_bytes_limit` drops, as nats-py's slow-consumer rule does, any one message at least this
    large (0: no limit); nothing else is ever pending.
    """
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining:
        raise ConnectionDrainingError
    share_repeated_headers(nc)
    nc._sid += 1
    sub = DirectSubscription(nc, nc._sid, subject, on_msg, pending_bytes_limit)
    nc._subs[sub._id] = sub
    await nc._send_subscribe(sub)
    return sub


PINNED_NATS_PY = "2.16."


class NatsInternalsMoved(RuntimeError):
    """The nats-py installed does not have the internals `subscribe_direct` builds on."""


def share_repeated_headers(nc: NATS) -> None:
    """Parse a run of identical message headers once (on this client only).

    nats-server sends one copy of a stream message per subscription, each with the same header bytes
    (the stream, subject, sequence and time): a process holding a thousand subscriptions on one
    subject would parse the same headers a thousand times. The copies share one parsed dict, which
    nothing that reads a message changes.
    """
    if getattr(nc, "_shares_headers", False):
        return
    parse = nc._process_headers
    last: list[Any] = [None, None]  # the raw header bytes of the last message, and what they parsed to

    async def process_headers(headers: bytes) -> dict[str, str] | None:
        if headers and headers == last[0]:
            return last[1]
        parsed: dict[str, str] | None = await parse(headers)
        last[0], last[1] = headers, parsed
        return parsed
    nc._process_headers = process_headers  # type: ignore[method-assign]
    nc._shares_headers = True  # type: ignore[attr-defined]


def parser_internals_missing() -> list[str]:
    """What gateway/streams/natscopies.py's parser needs of nats-py's Parser and does not find."""
    import inspect

    from nats.protocol import parser

    reset_code = inspect.getsource(parser.Parser.reset)
    missing = [f"Parser.{name}" for name in ("buf", "state") if f"self.{name}" not in reset_code]
    if not inspect.iscoroutinefunction(getattr(parser.Parser, "parse", None)):
        missing.append("Parser.parse()")
    if not hasattr(parser, "AWAITING_CONTROL_LINE"):
        missing.append("parser.AWAITING_CONTROL_LINE")
    return missing


def check_nats_internals() -> None:
    """Fail fast, naming what moved, when nats-py lacks what a DirectSubscription relies on."""
    import inspect

    from nats.aio import client

    missing = []
    version = getattr(client, "__version__", "?")
    if not str(version).startswith(PINNED_NATS_PY):
        missing.append(f"version {PINNED_NATS_PY}x (found {version})")
    client_code = inspect.getsource(NATS.__init__)
    missing += [f"Client.{name}" for name in ("_sid", "_subs") if f"self.{name}" not in client_code]
    if not inspect.iscoroutinefunction(getattr(NATS, "_process_headers", None)):
        missing.append("Client._process_headers()")
    missing += [f"Client.{name}()" for name in ("_send_subscribe", "_process_msg")
                if not inspect.iscoroutinefunction(getattr(NATS, name, None))]
    if not callable(getattr(NATS, "_build_message", None)):
        missing.append("Client._build_message()")
    if "self._ps" not in client_code:
        missing.append("Client._ps")
    missing += parser_internals_missing()
    sub_code = inspect.getsource(Subscription.__init__)
    missing += [f"Subscription.{name}" for name in ("_pending_queue", "_pending_size", "_pending_next_msgs_calls")
                if f"self.{name}" not in sub_code]
    if missing:
        raise NatsInternalsMoved(
            "gateway/streams/natssub.py and natscopies.py build on nats-py internals that this nats-py lacks: "
            + ", ".join(missing) + f"; install nats-py {PINNED_NATS_PY}x (setup.cfg pins it) or port them")
