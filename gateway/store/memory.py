"""The in-process (L1) tier: :class:`MemoryCache`, a bounded LRU of
:class:`~gateway.store.cache.CacheEntry` (the entries, their memory layout and the generation
scheme are :mod:`gateway.store.cache`'s).

Threads: the L1 tier is also read from threads other than the event loop's, by
:meth:`MemoryCache.peek` (the WSGI middleware answers cached decisions on the server's worker
threads). A lookup moves the key to the end of an ``OrderedDict`` (the LRU order), a store may
evict, so every operation on the tier holds one :class:`threading.Lock`. The sections are short
and never await or call out (the clock at most), so the loop thread waits for a worker thread
for microseconds at worst; uncontended, the lock costs tens of nanoseconds.

A module of its own so that the compiled build compiles it (``gateway/compiled.py``): every
request looks its session and its access answer up here, and every L2 hit copies both in.
The entry classes stay in :mod:`gateway.store.cache`, which is not compiled; what the tier
reads of an entry (``stale_until``, ``owner``) is the compiled :mod:`gateway.store.entries`.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from gateway.store.cache import CacheEntry, Clock, Generation
from gateway.store.entries import owner_of, stale_until_of

__all__ = ["MemoryCache"]

T = TypeVar("T")

_NO_TIME = timedelta(0)


class MemoryCache(Generic[T]):
    """The L1 tier: a bounded LRU whose entries expire at their ``stale_until``.

    At most ``max_entries`` entries: a store into a full cache drops the least recently used
    one. An expired entry is dropped when a lookup finds it, or in its turn as the least
    recently used. Generations come from one process-wide counter, so a customer never returns
    to a generation it used before. Only invalidated customers have a generation record; a
    record can be forgotten once every entry it hides has expired (``stale_until`` is bounded
    by the longest lifetime ever stored), which keeps the record table from growing without
    bound. If it still exceeds ``max_entries`` (an invalidation storm), the whole cache is
    cleared: safe, and rare.
    """

    def __init__(self, max_entries: int, clock: Clock) -> None:
        self._clock = clock
        self._max_entries = max_entries
        # key -> the entry, least recently used first. An entry stored under a generation
        # other than the floor (its scope's or its owner's had a record then) is kept as
        # (entry, its scope's generation, its owner's) instead; a bare entry was stored under
        # the floor for both (the floor only moves when the entries are cleared), so it saves a
        # tuple per entry in the usual case. An entry of an older generation than its scope's
        # is a miss (dropped when a lookup finds it, replaced when the key is stored again).
        self._entries: OrderedDict[str, CacheEntry[T] | tuple[CacheEntry[T], int, int]] = (
            OrderedDict()
        )
        self._generations: dict[str, tuple[int, datetime]] = {}  # customer -> (generation, at)
        self._counter = itertools.count(1)
        # The generation of every customer without a record of its own: 0 until the first
        # invalidate_all, then a fresh one, so values asked for before it cannot be stored.
        self._floor = 0
        self._longest = timedelta(0)  # the longest entry lifetime ever stored
        # Held by every operation: peek() runs on other threads than the loop's (module doc).
        self._lock = threading.Lock()

    tier = "l1"

    def _generation(self, customer_id: str | None) -> int:
        if customer_id is None:
            return self._floor
        record = self._generations.get(customer_id)
        return self._floor if record is None else record[0]

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        return self.peek(key, customer_id=customer_id)

    def peek(
        self, key: str, *, customer_id: str | None = None, now: datetime | None = None
    ) -> CacheEntry[T] | None:
        """``get`` without awaiting: safe from any thread (see the module docstring). ``now``:
        the caller's clock reading, if it has one (else the clock is read, once an entry is
        found: a miss needs no time)."""
        with self._lock:
            stored = self._entries.get(key)
            if stored is None:
                return None
            if now is None:
                now = self._clock()
            if isinstance(stored, tuple):
                entry, stored_generation, owner_generation = stored
                if stored_generation != self._generation(customer_id) or now >= stale_until_of(
                    entry
                ):
                    del self._entries[key]  # invalidated since it was stored, or dead
                    return None
                scope = owner_of(entry)
                if scope is not None and self._generation(scope) != owner_generation:
                    return None  # its owner was invalidated after it was stored
                self._entries.move_to_end(key)
                return entry
            # A bare entry, stored under the floor: only a record (all are newer) can hide it.
            generations = self._generations
            if (now >= stored.fresh_until and now >= stale_until_of(stored)) or (
                generations and customer_id is not None and customer_id in generations
            ):
                del self._entries[key]  # dead, or invalidated since it was stored
                return None
            if generations:
                owner = owner_of(stored)
                if owner is not None and owner in generations:
                    return None  # its owner was invalidated after it was stored
            self._entries.move_to_end(key)
            return stored

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        self.store(key, entry, customer_id=customer_id, generation=generation)

    def store(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        """``set`` without awaiting: it never waits for anything but its lock (any thread)."""
        with self._lock:
            # Without any generation record (the usual case) every scope is at the floor.
            generations = self._generations
            floor = self._floor
            current = self._generation(customer_id) if generations else floor
            if generation is not None and generation != current:
                return  # invalidated since the value was asked for: nobody may find it
            stale_until = stale_until_of(entry)
            lifetime = stale_until - self._clock()
            if lifetime <= _NO_TIME:
                return
            if lifetime > self._longest:
                self._longest = lifetime
            owner_generation = self._generation(owner_of(entry)) if generations else floor
            entries = self._entries
            # A bare entry's lookup tests ``stale_until`` only once past ``fresh_until``.
            if current == floor and owner_generation == floor and stale_until >= entry.fresh_until:
                entries[key] = entry
            else:
                entries[key] = (entry, current, owner_generation)
            entries.move_to_end(key)
            if len(entries) > self._max_entries:
                entries.popitem(last=False)

    async def generation(self, customer_id: str) -> int:
        with self._lock:
            return self._generation(customer_id)

    async def invalidate_customer(self, customer_id: str) -> None:
        with self._lock:
            now = self._clock()
            self._generations[customer_id] = (next(self._counter), now)
            if len(self._generations) > self._max_entries:
                self._forget_old_generations(now)

    async def invalidate_all(self) -> None:
        """Forget every entry. Everyone moves to a new generation, so a value asked for before
        (an answer still in flight) is not stored either."""
        with self._lock:
            self._floor = next(self._counter)
            self._entries.clear()
            self._generations.clear()

    def _forget_old_generations(self, now: datetime) -> None:
        longest = self._longest
        self._generations = {
            customer: record
            for customer, record in self._generations.items()
            if now - record[1] <= longest
        }
        if len(self._generations) > self._max_entries:
            # Every record still hides live entries: drop the entries instead, and move
            # everyone to a new generation, so nothing asked for before this can be stored.
            self._floor = next(self._counter)
            self._entries.clear()
            self._generations.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
