"""The shared tier (L2): a :class:`~gateway.service.cache.PayloadCache` in Redis.

Keys carry a format version, a namespace and the *epoch* (``pwg:v1:access:<epoch>:…``); callers
already hash every credential into their keys (:func:`~gateway.service.cache.token_key`).

* Scoped entries (a customer's access answers, a session's validation) also carry the scope's
  *generation* (``…@<generation>``), read from ``pwg:v1:<namespace>:gen:<scope>``. Invalidating
  a scope stores a new generation there: after that no lookup builds the old keys, and the old
  entries expire by their TTL. No SCAN, no KEYS. Generations are drawn from one counter
  (``pwg:v1:gen-counter``), so a value is never used twice, and a generation record expires
  ``generation_ttl`` seconds after it was written: by then every entry stored under the
  generation it replaced has expired too (entries live at most ``max_lifetime``, and a value
  asked for before the invalidation is stored within the flight time that ``generation_ttl``
  adds on top). Records therefore do not pile up with every logout.
* An entry with an owner (:attr:`~gateway.service.cache.CacheEntry.owner`: a session
  validation's customer) is stored with the owner scope's generation at that moment, and a
  lookup that finds it reads the owner's generation record too (one more GET, only on L2 hits
  of owned entries) and treats a changed one as a miss.
* :meth:`RedisCache.invalidate_all` moves to a new epoch (``INCR pwg:v1:epoch``). Each process
  keeps the epoch in memory (:class:`Epoch`, shared by its caches) and re-reads it when the
  invalidation bus says so or reconnects, so a lookup costs no extra round trip for it.

Entries expire in Redis at their ``stale_until``; a lookup also checks both instants against the
caller's clock, so a tier that runs behind Redis's clock never serves past ``stale_until``. A
value that cannot be decoded counts as a miss. Redis errors propagate: the caller
(:class:`~gateway.service.layered.LayeredCache`) bounds and absorbs them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Generic, TypeVar

import redis.asyncio as redis

from gateway.service.cache import PREFIX, CacheEntry, Clock, Generation
from gateway.service.codec import CodecError, EntryCodec

T = TypeVar("T")

EPOCH_KEY = f"{PREFIX}:epoch"
COUNTER_KEY = f"{PREFIX}:gen-counter"


class Epoch:
    """A process's copy of the shared epoch; one object for all its Redis caches.

    :meth:`invalidate_all` (the invalidation bus calls it when any process invalidated
    everything, and after a reconnect) makes the next lookup read the epoch again.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._value: int | None = None

    async def current(self) -> int:
        if self._value is None:
            raw = await self._client.get(EPOCH_KEY)
            self._value = 0 if raw is None else int(raw)
        return self._value

    async def advance(self) -> None:
        self._value = int(await self._client.incr(EPOCH_KEY))

    async def invalidate_customer(self, customer_id: str) -> None:
        """Nothing to do: generations are read from Redis on every lookup."""

    async def invalidate_all(self) -> None:
        self._value = None


class RedisCache(Generic[T]):
    """One cache (``namespace``: "access", "session") in a shared Redis.

    ``max_lifetime`` (seconds) caps every entry's TTL; ``generation_ttl`` is how long a scope's
    generation record lives after an invalidation (at least ``max_lifetime`` plus the longest a
    platform call can take). None: no cap, records never expire.
    """

    tier = "l2"

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        codec: EntryCodec[T],
        clock: Clock,
        *,
        epoch: Epoch | None = None,
        max_lifetime: float | None = None,
        generation_ttl: float | None = None,
    ) -> None:
        if (max_lifetime is None) != (generation_ttl is None):
            raise ValueError("max_lifetime and generation_ttl go together")
        if generation_ttl is not None and generation_ttl < (max_lifetime or 0):
            raise ValueError("generation_ttl must cover max_lifetime")
        self._client = client
        self._namespace = f"{PREFIX}:{namespace}"
        self._codec = codec
        self._clock = clock
        self.epoch = epoch if epoch is not None else Epoch(client)
        self._max_lifetime_ms = None if max_lifetime is None else math.ceil(max_lifetime * 1000)
        self._generation_ttl_ms = (
            None if generation_ttl is None else math.ceil(generation_ttl * 1000)
        )

    def generation_key(self, scope: str) -> str:
        return f"{self._namespace}:gen:{scope}"

    def _key(self, key: str, epoch: int, generation: int | None) -> str:
        if generation is None:
            return f"{self._namespace}:{epoch}:{key}"
        return f"{self._namespace}:{epoch}:{key}@{generation}"

    async def _scope_generation(self, scope: str) -> int:
        raw = await self._client.get(self.generation_key(scope))
        return 0 if raw is None else int(raw)

    async def generation(self, customer_id: str) -> tuple[int, int]:
        """(epoch, the scope's generation)."""
        return await self.epoch.current(), await self._scope_generation(customer_id)

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        epoch = await self.epoch.current()
        generation = None if customer_id is None else await self._scope_generation(customer_id)
        raw = await self._client.get(self._key(key, epoch, generation))
        if not isinstance(raw, bytes):  # None: a miss (a str only with decode_responses=True)
            return None
        try:
            entry, owner_generation = self._codec.decode_owned(raw)
        except CodecError:
            return None
        if self._clock() >= entry.stale_until:
            return None
        if entry.owner is not None and await self._scope_generation(entry.owner) != (
            owner_generation
        ):
            return None  # its owner was invalidated after it was stored
        return replace(entry, tier=self.tier)

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        if generation is not None and not (
            isinstance(generation, tuple)
            and len(generation) == 2
            and all(isinstance(part, int) for part in generation)
        ):
            raise TypeError(f"a Redis generation is (epoch, generation), not {generation!r}")
        lifetime_ms = math.ceil((entry.stale_until - self._clock()).total_seconds() * 1000)
        if lifetime_ms <= 0:
            return
        if self._max_lifetime_ms is not None:
            lifetime_ms = min(lifetime_ms, self._max_lifetime_ms)
        if generation is None:
            if customer_id is None:
                epoch, scope_generation = await self.epoch.current(), None
            else:
                epoch, scope_generation = await self.generation(customer_id)
        else:
            epoch, scope_generation = generation
            if customer_id is None:
                scope_generation = None
        owner_generation = 0
        if entry.owner is not None:
            owner_generation = await self._scope_generation(entry.owner)
        # Stored under the generation the value was asked for: after an invalidation that key
        # is never looked up again, so a late answer cannot resurface.
        await self._client.set(
            self._key(key, epoch, scope_generation),
            self._codec.encode(entry, owner_generation),
            px=lifetime_ms,
        )

    async def invalidate_customer(self, customer_id: str) -> None:
        generation = await self._client.incr(COUNTER_KEY)
        await self._client.set(
            self.generation_key(customer_id), generation, px=self._generation_ttl_ms
        )

    async def invalidate_all(self) -> None:
        await self.epoch.advance()
