"""L1 in front of L2: the in-process tier answers what it can, the shared tier the rest.

* ``get``: L1; on a miss L2, and an L2 hit is copied into L1 (its own ``fresh_until`` and
  ``stale_until`` come along, so L1 never keeps it longer than L2 would).
* ``set``: both tiers. ``invalidate_customer``: both tiers, then ``publish`` tells the other
  processes (:class:`~gateway.service.bus.InvalidationBus`).
* ``generation``: the pair of the tiers' generations; ``set`` hands each tier its own, so a
  value asked for before an invalidation in either tier is stored where no lookup finds it.

The shared tier must never fail a request: every L2 operation is bounded by ``timeout`` seconds,
and any Redis error or timeout is reported to ``on_error`` (a metric) and treated as a miss or a
skipped write. Invalidating in L2 is the exception: if it fails, the error propagates, because
the caller (a webhook) must know the shared tier may still hold the old answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from gateway.service.cache import CacheEntry, Generation, MemoryCache
from gateway.service.redis_cache import RedisCache
from gateway.service.singleflight import SingleFlight

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

_FAILURES = (RedisError, OSError, TimeoutError)


class LayeredCache(Generic[T]):
    """A :class:`~gateway.service.cache.PayloadCache` over an L1 and an L2 tier."""

    def __init__(
        self,
        l1: MemoryCache[T],
        l2: RedisCache[T],
        *,
        timeout: float,
        on_error: Callable[[str], None],
        publish: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._l1 = l1
        self._l2 = l2
        self._timeout = timeout
        self._on_error = on_error
        self._publish = publish
        # A cold spike asks L2 for one key many times at once: one Redis read serves them all.
        self._reads: SingleFlight[tuple[str, str | None], CacheEntry[T] | None] = SingleFlight()
        self._generations: SingleFlight[str, Generation | None] = SingleFlight()

    async def _shared(self, operation: str, call: Awaitable[R]) -> tuple[bool, R | None]:
        """(succeeded, result) of an L2 call, bounded and with failures absorbed."""
        try:
            async with asyncio.timeout(self._timeout):
                return True, await call
        except _FAILURES as exc:
            self._on_error(operation)
            log.debug("redis %s failed: %r", operation, exc)
            return False, None

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        entry = await self._l1.get(key, customer_id=customer_id)
        if entry is not None:
            return entry
        entry = await self._reads.run((key, customer_id), lambda: self._l2_get(key, customer_id))
        if entry is not None:
            await self._l1.set(key, entry, customer_id=customer_id)
        return entry

    async def _l2_get(self, key: str, customer_id: str | None) -> CacheEntry[T] | None:
        _, entry = await self._shared("get", self._l2.get(key, customer_id=customer_id))
        return entry

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
        await self._l1.invalidate_customer(customer_id)
        async with asyncio.timeout(self._timeout):
            await self._l2.invalidate_customer(customer_id)
            if self._publish is not None:
                await self._publish(customer_id)  # every other process's L1
