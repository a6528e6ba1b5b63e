"""Bounded shutdown helpers: a stop that cannot hang on a task that ignores cancellation."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Iterable

log = logging.getLogger(__name__)


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel tasks and wait for them at most `timeout` seconds; log any that would not stop."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        log.warning("task %s did not stop within %.1fs; abandoning it", task.get_name(), timeout)


async def bounded(awaitable: Awaitable[Any], timeout: float, name: str) -> bool:
    """Run awaitable for at most `timeout` seconds without waiting on its cancellation; True if it finished.

    asyncio.wait_for waits until the inner task has really been cancelled, which hangs forever
    when a library swallows CancelledError (seen with client close mid-reconnect); this does not.
    """
    task = asyncio.ensure_future(awaitable)
    task.set_name(name)
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        task.cancel()
        log.info("%s did not finish within %.1fs; moving on", name, timeout)
        return False
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        log.info("%s failed: %s", name, type(exc).__name__)
        return False
    return True


def raise_if_cancelled() -> None:
    """Call in a broad `except Exception`: re-raise the cancellation a library turned into an ordinary error.

    nats-py, for one, catches CancelledError while waiting to publish and raises
    TooManyStalledMsgsError instead; a retry loop would then swallow our shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; True if it was set.

    Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives just as the
    inner wait completes (shutdown sets the event, then cancels), leaving the task running on.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
