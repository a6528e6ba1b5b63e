"""One call answers everyone who asks the same question while it is on its way."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Askers of one key share one call; a connect storm makes one request, not one per socket.

    With `join_while_running` False a call is shared only by those who asked before it started
    (within one turn of the event loop): each asker's answer is then read after anything it sent
    before asking, which a stream's end read after its SUB needs.
    """

    def __init__(self, join_while_running: bool = True) -> None:
        self.join_while_running = join_while_running
        self.calls = 0
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def ask(self, key: K, call: Callable[[], Awaitable[V]]) -> Awaitable[V]:
        """The answer to `key`: from the call on its way, or from a new one."""
        pending = self._flights.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._flights[key] = loop.create_future()
            task = loop.create_task(self._fly(key, call, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return asyncio.shield(pending)

    async def _fly(self, key: K, call: Callable[[], Awaitable[V]], answer: asyncio.Future[V]) -> None:
        self.calls += 1
        if not self.join_while_running:
            del self._flights[key]
        try:
            result = await call()
        except BaseException as exc:  # noqa: BLE001 - every asker hears the same failure
            answer.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            answer.set_result(result)
        finally:
            if self._flights.get(key) is answer:
                del self._flights[key]
