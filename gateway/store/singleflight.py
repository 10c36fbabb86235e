"""Single-flight: concurrent calls for one key share one execution.

The first caller starts the work as its own task; later callers for the same key wait on that
task. Waiters are shielded from it: a caller that is cancelled (its visitor went away) stops
waiting but does not cancel the call the others wait for. The result, or the exception, reaches
every waiter. The key is forgotten as soon as the call finishes, so nothing is cached here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Coalesces concurrent ``run(key, work)`` calls; ``on_coalesced`` counts the joiners."""

    def __init__(self, on_coalesced: Callable[[], None] | None = None) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}
        self._on_coalesced = on_coalesced

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        elif self._on_coalesced is not None:
            self._on_coalesced()
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception retrieved: if every waiter was cancelled nobody else will, and
            # asyncio would log "exception was never retrieved".
            task.exception()

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self._flights)
