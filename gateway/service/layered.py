"""L1 in front of L2: the in-process tier answers what it can, the shared tier the rest.

* ``get``: L1; on a miss L2, and an L2 hit is copied into L1 (its own ``fresh_until`` and
  ``stale_until`` come along, so L1 never keeps it longer than L2 would) unless this process
  learnt of an invalidation while Redis answered (:attr:`RedisCache.changes
  <gateway.service.redis_cache.RedisCache.changes>`): the answer may be one it hid, and L1
  would otherwise keep it under the new generation. It still answers the lookup, which was
  concurrent with the invalidation.
* ``set``: both tiers. ``invalidate_customer`` and ``invalidate_all``: L2, then ``publish``
  tells the other processes (:class:`~gateway.service.bus.InvalidationBus`), then L1 (also
  when L2 failed). L1 last: a lookup that misses L1 in between would find the old answer in L2
  and put it back.
* ``generation``: the pair of the tiers' generations; ``set`` hands each tier its own, so a
  value asked for before an invalidation in either tier is stored where no lookup finds it.
* ``peek``: L1 alone (no I/O, any thread): what ``get`` would answer without asking Redis.

The shared tier must never fail a request: every L2 operation goes through the process's
:class:`~gateway.service.redis_guard.RedisGuard` (a timeout, counting, a breaker), and a failure
is treated as a miss or a skipped write. Invalidating is the exception: if L2 or the publish
fails, the error propagates (counted), because the caller (a webhook) must know the shared tier
or another process may still hold the old answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Generic, TypeVar

from gateway.service.bus import ALL
from gateway.service.cache import CacheEntry, Generation, MemoryCache
from gateway.service.redis_cache import RedisCache
from gateway.service.redis_guard import FAILURES, RedisGuard
from gateway.service.singleflight import SingleFlight

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


class LayeredCache(Generic[T]):
    """A :class:`~gateway.service.cache.PayloadCache` over an L1 and an L2 tier."""

    tier = "l2"

    def __init__(
        self,
        l1: MemoryCache[T],
        l2: RedisCache[T],
        *,
        guard: RedisGuard,
        publish: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._l1 = l1
        self._l2 = l2
        self._guard = guard
        self._publish = publish
        # A cold spike asks L2 for one key many times at once: one Redis read serves them all.
        # (the entry, RedisCache.changes when the read started)
        self._reads: SingleFlight[tuple[str, str | None], tuple[CacheEntry[T] | None, int]] = (
            SingleFlight()
        )
        self._generations: SingleFlight[str, Generation | None] = SingleFlight()

    async def _shared(self, operation: str, call: Awaitable[R]) -> tuple[bool, R | None]:
        """(succeeded, result) of an L2 call, bounded and with failures absorbed."""
        return await self._guard.call(operation, call)

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        entry = await self._l1.get(key, customer_id=customer_id)
        if entry is not None:
            return entry
        entry, changes = await self._reads.run(
            (key, customer_id), lambda: self._l2_get(key, customer_id)
        )
        if entry is not None and changes == self._l2.changes:
            # A copy marked as L1's own (dataclasses.replace costs microseconds: it inspects).
            copy = CacheEntry(
                entry.value, entry.fresh_until, entry.stale_until, self._l1.tier, entry.owner
            )
            await self._l1.set(key, copy, customer_id=customer_id)
        return entry

    def peek(
        self, key: str, *, customer_id: str | None = None, now: datetime | None = None
    ) -> CacheEntry[T] | None:
        """L1's entry, without awaiting or asking L2 (an L2 hit costs a round trip: that is a
        miss for the synchronous path, which leaves it to ``get``)."""
        return self._l1.peek(key, customer_id=customer_id, now=now)

    async def _l2_get(self, key: str, customer_id: str | None) -> tuple[CacheEntry[T] | None, int]:
        changes = self._l2.changes
        _, entry = await self._shared("get", self._l2.get(key, customer_id=customer_id))
        return entry, changes

    async def _l2_generation(self, customer_id: str) -> Generation | None:
        _, generation = await self._shared("generation", self._l2.generation(customer_id))
        return generation

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        l1_generation: Generation | None = None
        l2_generation: Generation | None = None
        if isinstance(generation, tuple):
            l1_generation, l2_generation = generation
        await self._l1.set(key, entry, customer_id=customer_id, generation=l1_generation)
        if customer_id is not None and generation is not None and l2_generation is None:
            return  # L2's generation was unknown when the value was asked for: do not guess
        await self._shared(
            "set",
            self._l2.set(key, entry, customer_id=customer_id, generation=l2_generation),
        )

    async def generation(self, customer_id: str) -> Generation:
        l1_generation = await self._l1.generation(customer_id)
        l2_generation = await self._generations.run(
            customer_id, lambda: self._l2_generation(customer_id)
        )
        return (l1_generation, l2_generation)

    async def invalidate_customer(self, customer_id: str) -> None:
        try:
            await self._everywhere(
                "invalidate", self._l2.invalidate_customer(customer_id), customer_id
            )
        finally:
            await self._l1.invalidate_customer(customer_id)

    async def invalidate_all(self) -> None:
        try:
            await self._everywhere("invalidate", self._l2.invalidate_all(), ALL)
        finally:
            await self._l1.invalidate_all()

    async def _everywhere(self, operation: str, call: Awaitable[None], message: str) -> None:
        """Apply an invalidation to L2, then tell every other process's L1 (``publish``).
        Failures propagate (after being counted): the caller must know it did not happen."""
        try:
            async with asyncio.timeout(self._guard.timeout):
                await call
                if self._publish is not None:
                    await self._publish(message)
        except FAILURES as exc:
            self._guard.failed(operation, exc)
            raise
