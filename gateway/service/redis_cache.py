"""The shared tier (L2): a :class:`~gateway.service.cache.PayloadCache` in Redis.

Keys carry a format version and a namespace (``pwg:v1:access:…``); callers already hash every
credential into their keys (:func:`~gateway.service.cache.token_key`). A customer's entries
carry the customer's *generation* (``…@<generation>``), an integer in
``pwg:v1:gen:<customer>``: invalidation is one ``INCR``, after which no lookup builds the old
keys and the old entries expire by their TTL. No SCAN, no KEYS. Entries expire in Redis at their
``stale_until``; a lookup also checks both instants against the caller's clock, so a tier that
runs behind Redis's clock never serves past ``stale_until``.

A value that cannot be decoded counts as a miss. This step has no timeouts, breaker or error
counting of its own yet: Redis errors propagate to the caller.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import redis.asyncio as redis

from gateway.service.cache import CacheEntry, Clock, Generation
from gateway.service.codec import CodecError, EntryCodec

T = TypeVar("T")

PREFIX = "pwg:v1"


class RedisCache(Generic[T]):
    """One cache (``namespace``: "access", "session") in a shared Redis."""

    def __init__(
        self, client: redis.Redis, namespace: str, codec: EntryCodec[T], clock: Clock
    ) -> None:
        self._client = client
        self._prefix = f"{PREFIX}:{namespace}:"
        self._codec = codec
        self._clock = clock

    @staticmethod
    def generation_key(customer_id: str) -> str:
        return f"{PREFIX}:gen:{customer_id}"

    def _key(self, key: str, generation: int | None) -> str:
        if generation is None:
            return self._prefix + key
        return f"{self._prefix}{key}@{generation}"

    async def generation(self, customer_id: str) -> int:
        raw = await self._client.get(self.generation_key(customer_id))
        return 0 if raw is None else int(raw)

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        generation = None if customer_id is None else await self.generation(customer_id)
        raw = await self._client.get(self._key(key, generation))
        if not isinstance(raw, bytes):  # None: a miss (a str only with decode_responses=True)
            return None
        try:
            entry = self._codec.decode(raw)
        except CodecError:
            return None
        if self._clock() >= entry.stale_until:
            return None
        return entry

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        if generation is not None and not isinstance(generation, int):
            raise TypeError(f"a Redis generation is an int, not {generation!r}")
        lifetime = (entry.stale_until - self._clock()).total_seconds()
        if lifetime <= 0:
            return
        if customer_id is not None and generation is None:
            generation = await self.generation(customer_id)
        # Stored under the generation the value was asked for: after an invalidation that key
        # is never looked up again, so a late answer cannot resurface.
        await self._client.set(
            self._key(key, generation if customer_id is not None else None),
            self._codec.encode(entry),
            px=max(1, math.ceil(lifetime * 1000)),
        )

    async def invalidate_customer(self, customer_id: str) -> None:
        await self._client.incr(self.generation_key(customer_id))
