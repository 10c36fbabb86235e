"""L1 in front of L2: the in-process tier answers what it can, the shared tier the rest.

* ``get``: L1; on a miss L2, and an L2 hit is copied into L1 (its own ``fresh_until`` and
  ``stale_until`` come along, so L1 never keeps it longer than L2 would) unless this process
  learnt of an invalidation while Redis answered (:attr:`RedisCache.changes
  <gateway.store.redis_cache.RedisCache.changes>`): the answer may be one it hid, and L1
  would otherwise keep it under the new generation. It still answers the lookup, which was
  concurrent with the invalidation.
* ``set``: both tiers. ``invalidate_customer`` and ``invalidate_all``: L2, then ``publish``
  tells the other processes (:class:`~gateway.store.bus.InvalidationBus`), then L1 (also
  when L2 failed). L1 last: a lookup that misses L1 in between would find the old answer in L2
  and put it back.
* ``generation``: the pair of the tiers' generations; ``set`` hands each tier its own, so a
  value asked for before an invalidation in either tier is stored where no lookup finds it.
* ``peek``: L1 alone (no I/O, any thread): what ``get`` would answer without asking Redis.
* ``companion`` and ``get_chained`` (:mod:`~gateway.store.companion`): a session's lookup
  that misses L1 reads the access answer that follows it in the same Redis round trip
  (:meth:`RedisCache.get_chained <gateway.store.redis_cache.RedisCache.get_chained>`), and
  the :class:`Companion` hands it to the access lookup, which then asks L1 first and Redis not
  at all. Every rule of ``get`` holds for both entries: they answer as L2 hits, and are copied
  into L1 only if this process learnt of no invalidation since the read started (the access
  cache's own ``changes``, counted from then, decide for its entry). The access lookup uses
  the prefetched answer only for the customer it was read for, and only if nothing else
  happened in between (:meth:`Companion.discard`: the session needed the platform).

The shared tier must never fail a request: every L2 operation goes through the process's
:class:`~gateway.store.redis_guard.RedisGuard` (a timeout, counting, a breaker), and a failure
is treated as a miss or a skipped write. Invalidating is the exception: if L2 or the publish
fails, the error propagates (counted), because the caller (a webhook) must know the shared tier
or another process may still hold the old answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from gateway.store.bus import ALL
from gateway.store.cache import CacheEntry, Generation
from gateway.store.companion import CompanionLookup
from gateway.store.entries import in_tier
from gateway.store.memory import MemoryCache
from gateway.store.redis_cache import Prefetched, RedisCache
from gateway.store.redis_chain import ChainAnswer
from gateway.store.redis_guard import FAILURES, RedisGuard
from gateway.store.singleflight import SingleFlight

T = TypeVar("T")
log = logging.getLogger(__name__)


class Companion(Generic[T]):
    """One request's announced lookup in a :class:`LayeredCache` (see
    :class:`~gateway.store.companion.CompanionLookup`): made by :meth:`LayeredCache.companion`,
    filled by the session cache's :meth:`LayeredCache.get_chained`, used once."""

    __slots__ = ("_cache", "_chained", "suffix")

    def __init__(self, cache: LayeredCache[T], suffix: str) -> None:
        self._cache = cache
        self.suffix = suffix
        self._chained: _Chained | None = None

    async def get(self, key: str, *, customer_id: str) -> CacheEntry[T] | None:
        known, entry = self.take(key, customer_id=customer_id)
        if known:
            return entry
        return await self._cache._from_l2(key, customer_id)

    def take(self, key: str, *, customer_id: str) -> tuple[bool, CacheEntry[T] | None]:
        """(True, what :meth:`get` answers) when L1 or the session's read has it, without
        awaiting; (False, None) when only :meth:`get` can tell (it asks Redis)."""
        chained, self._chained = self._chained, None
        return self._cache._follow(key, customer_id, chained)

    def discard(self) -> None:
        self._chained = None

    def _offer(self, chained: _Chained) -> None:
        if chained.cache is self._cache and chained.suffix == self.suffix:
            self._chained = chained


class LayeredCache(Generic[T]):
    """A :class:`~gateway.store.cache.PayloadCache` over an L1 and an L2 tier."""

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
        # (the entry, RedisCache.changes when the read started, what a chained read brought)
        self._reads: SingleFlight[tuple[str, str | None], _Read[T]] = SingleFlight()
        self._generations: SingleFlight[str, Generation | None] = SingleFlight()

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        entry = self._l1.peek(key, customer_id=customer_id)  # get, without awaiting
        if entry is not None:
            return entry
        return await self._from_l2(key, customer_id)

    def companion(self, suffix: str) -> Companion[T] | None:
        """A follow-up lookup of ``<customer id><suffix>`` (scoped to the customer) that a
        session cache's :meth:`get_chained` can answer ahead; None when L2 cannot chain reads
        (a Cluster)."""
        return Companion(self, suffix) if self._l2.chains_with(self._l2) else None

    async def get_chained(
        self, key: str, *, customer_id: str, then: CompanionLookup[Any]
    ) -> CacheEntry[T] | None:
        """``get``; on an L1 miss, Redis also reads ``then``'s entry for the customer this
        entry names, in the same round trip, and ``then`` keeps it for its lookup."""
        entry = self._l1.peek(key, customer_id=customer_id)  # get, without awaiting
        if entry is not None:
            return entry
        if not isinstance(then, Companion) or not self._l2.chains_with(then._cache._l2):
            return await self._from_l2(key, customer_id)
        cache, suffix = then._cache, then.suffix
        # One flight per key, chained or not: a lookup that joins another's read gets the
        # follow-up's answer only if it announced the same one.
        entry, changes, chained = await self._reads.run(
            (key, customer_id), lambda: self._l2_chained(key, customer_id, cache, suffix)
        )
        if chained is not None:
            then._offer(chained)
        return self._answer(key, entry, changes, customer_id)

    def get_chained_soon(
        self,
        key: str,
        *,
        customer_id: str,
        then: CompanionLookup[Any],
        done: Callable[[bool, CacheEntry[T] | None], None],
    ) -> bool:
        """:meth:`get_chained` without a task or an awaiting caller, for an entry L1 does not
        hold: starts the one-round-trip read of both entries and returns True; ``done(True,
        entry)`` is then called on the loop with what :meth:`get_chained` would answer (the
        follow-up offered to ``then`` in the same way), or ``done(False, None)`` when only
        :meth:`get_chained` can tell: the read failed (not counted: the caller asks again,
        through the guard), or the entry needs another read. False, and nothing started, when
        it cannot read that way: L1 holds the entry, L2 cannot chain to ``then``'s cache, an
        epoch is not known in memory, or Redis failed lately (the guard is not "ok": every
        read then goes through the guard's breaker)."""
        if not isinstance(then, Companion) or self._guard.state != "ok":
            return False
        l2, cache = self._l2, then._cache
        then_l2 = cache._l2
        if not l2.chains_with(then_l2) or self._l1.peek(key, customer_id=customer_id) is not None:
            return False
        suffix = then.suffix
        lookup = l2.chain_lookup(key, customer_id=customer_id, then=then_l2, suffix=suffix)
        if lookup is None:
            return False
        changes, then_changes = l2.changes, then_l2.changes
        guard = self._guard

        def answered(answer: ChainAnswer | Exception) -> None:
            if isinstance(answer, Exception):
                done(False, None)
                return
            guard.succeeded()
            found = l2.chained(answer, then_l2)
            if found is None:
                done(False, None)
                return
            entry, prefetched = found
            if prefetched is not None:
                then._offer(_Chained(cache, suffix, prefetched, then_changes))
            done(True, self._answer(key, entry, changes, customer_id))

        l2.submit_chained(lookup, answered)
        return True

    async def _from_l2(self, key: str, customer_id: str | None) -> CacheEntry[T] | None:
        entry, changes, _ = await self._reads.run(
            (key, customer_id), lambda: self._l2_get(key, customer_id)
        )
        return self._answer(key, entry, changes, customer_id)

    def _follow(
        self, key: str, customer_id: str, chained: _Chained | None
    ) -> tuple[bool, CacheEntry[T] | None]:
        """A :class:`Companion`'s lookup from L1, or from L2's answer already at hand if the
        session's read brought it for this key: (True, the entry); (False, None) when neither
        has it (Redis must be asked)."""
        entry = self._l1.peek(key, customer_id=customer_id)  # get, without awaiting
        if entry is not None:
            return True, entry
        if (
            chained is None
            or chained.prefetched.customer_id != customer_id
            or key != customer_id + chained.suffix
        ):
            return False, None
        return True, self._answer(key, chained.prefetched.entry, chained.changes, customer_id)

    def _answer(
        self, key: str, entry: CacheEntry[T] | None, changes: int, customer_id: str | None
    ) -> CacheEntry[T] | None:
        """An L2 read's answer to its lookup, copied into L1 (marked as L1's own) unless this
        process learnt of an invalidation since the read started (``changes``: then)."""
        if entry is not None and changes == self._l2.changes:
            self._l1.store(key, in_tier(entry, self._l1.tier), customer_id=customer_id)
        return entry

    def peek(
        self, key: str, *, customer_id: str | None = None, now: datetime | None = None
    ) -> CacheEntry[T] | None:
        """L1's entry, without awaiting or asking L2 (an L2 hit costs a round trip: that is a
        miss for the synchronous path, which leaves it to ``get``)."""
        return self._l1.peek(key, customer_id=customer_id, now=now)

    async def _l2_get(self, key: str, customer_id: str | None) -> _Read[T]:
        changes = self._l2.changes
        _, entry = await self._guard.call("get", self._l2.get(key, customer_id=customer_id))
        return entry, changes, None

    async def _l2_chained(
        self, key: str, customer_id: str, cache: LayeredCache[Any], suffix: str
    ) -> _Read[T]:
        changes, then_changes = self._l2.changes, cache._l2.changes
        _, found = await self._guard.call(
            "get",
            self._l2.get_chained(key, customer_id=customer_id, then=cache._l2, suffix=suffix),
        )
        if found is None:  # failed (counted): a miss, and the follow-up asks on its own
            return None, changes, None
        entry, prefetched = found
        chained = None if prefetched is None else _Chained(cache, suffix, prefetched, then_changes)
        return entry, changes, chained

    async def _l2_generation(self, customer_id: str) -> Generation | None:
        _, generation = await self._guard.call("generation", self._l2.generation(customer_id))
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
        await self._guard.call(
            "set",
            self._l2.set(key, entry, customer_id=customer_id, generation=l2_generation),
        )

    async def generation(self, customer_id: str) -> Generation:
        l1_generation = await self._l1.generation(customer_id)
        l2_generation = await self._generations.run(
            customer_id, lambda: self._l2_generation(customer_id)
        )
        return (l1_generation, l2_generation)

    # L1 is invalidated whether L2's invalidation failed or not. Not with an await inside
    # ``finally``: compiled by mypyc (2.4), that re-raises a stale exception in a later call
    # (mypyc/mypyc#1114; tests/test_compiled.py keeps it out of every compiled module).

    async def invalidate_customer(self, customer_id: str) -> None:
        try:
            await self._everywhere(
                "invalidate", self._l2.invalidate_customer(customer_id), customer_id
            )
        except BaseException:
            await self._l1.invalidate_customer(customer_id)
            raise
        await self._l1.invalidate_customer(customer_id)

    async def invalidate_all(self) -> None:
        try:
            await self._everywhere("invalidate", self._l2.invalidate_all(), ALL)
        except BaseException:
            await self._l1.invalidate_all()
            raise
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


class _Chained(NamedTuple):
    """A follow-up's answer read along with a session's: for ``cache``'s lookup of
    ``<customer><suffix>``, with that cache's ``RedisCache.changes`` when the read started."""

    cache: LayeredCache[Any]
    suffix: str
    prefetched: Prefetched[Any]
    changes: int


# An L2 read: the entry, RedisCache.changes when it started, and what a chained read brought.
# (Both after LayeredCache: a compiled build makes the named tuple's fields from their types
# when the module is imported, and the class must exist by then.)
_Read = tuple[CacheEntry[T] | None, int, _Chained | None]
