"""The cache interface of the access service, and its in-process (L1) tier.

Every tier implements :class:`PayloadCache`, a contract that one shared test suite checks
(``tests/service/test_cache_contract.py``). An entry carries two instants: before
``fresh_until`` it answers requests; between ``fresh_until`` and ``stale_until`` it is kept only
to answer while the platform fails (stale-if-error); after ``stale_until`` it is gone.

Entries with a *scope* (``customer_id=`` on get/set: a customer id, or for a session its own
key) can be dropped in O(1) by :meth:`PayloadCache.invalidate_customer`: the scope's
*generation* is part of the stored key, and invalidation moves the scope to a new generation,
so the old entries become unreachable and age out instead of being searched for. The Redis tier
uses the same scheme. :meth:`PayloadCache.invalidate_all` moves every scope at once.

An entry may also name an *owner* (:attr:`CacheEntry.owner`): a second scope it belongs to,
whose generation the tier records when it stores the entry and compares when a lookup finds
it. The lookup does not need to know the owner in advance, which is the point: a session's
validation is found by its token's hash, and only its value (the customer id) says whose it
is. Invalidating the owner scope (``invalidate_customer(owner)``) therefore makes every entry it
owns unreachable in O(1), without a list of them. The cost on a lookup is one dict lookup in
L1 (the owner's generation record, usually absent) and, on an L2 hit, none while the process
holds a copy of the owner's record (:mod:`gateway.service.redis_generations`), else one Redis
read. Session
validations are owned by ``sessions-of:<customer id>`` (:func:`sessions_scope`): per-customer
session invalidation (a CUSTOMER CHANGE or DELETION callback). Across processes an owner scope
is invalidated like any other scope: a new generation record in Redis, and a message on the
invalidation bus naming the scope, which every process applies to its L1. The owner's generation
is recorded when the entry is stored, i.e. after the platform answered: an invalidation that
the storing process learns of between the platform's answer and the store is not seen (a window
of microseconds; one the process learns of only after the store hides the entry, the safe
side). When L1 forgets an old generation record (see
:class:`MemoryCache`), entries stored under it no longer match and count as misses: a
needless revalidation, never a stale hit.

Keys are built by the caller and never hold a raw credential: sessions are keyed by a SHA-256 of
the token (:func:`token_key`).

Time: the caller's clock returns aware datetimes (the core's unit). A caller that has already
read the clock for this request hands the reading to :meth:`MemoryCache.peek` (``now``) instead
of having it read again.

Threads: the L1 tier is also read from threads other than the event loop's, by
:meth:`MemoryCache.peek` (the WSGI middleware answers cached decisions on the server's worker
threads). A lookup moves the key to the end of an ``OrderedDict`` (the LRU order), a store may
evict, so every operation on the tier holds one :class:`threading.Lock`. The sections are short
and never await or call out (the clock at most), so the loop thread waits for a worker thread
for microseconds at worst; uncontended, the lock costs tens of nanoseconds.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
Clock = Callable[[], datetime]
"""An aware-datetime clock (UTC); the same one drives the decision core."""

PREFIX = "pwg:v1"
"""Every key, channel and marker this gateway keeps in Redis starts with it (the format's
version: a changed format gets a new prefix and never reads the old one)."""

Generation = Hashable
"""A customer's generation as a tier reports it: opaque to callers, who only hand it back to
``set`` and use it in flight keys (one tier: an int; layered tiers: a tuple of theirs)."""


def token_key(kind: str, token: str) -> str:
    """The cache key of a credential: ``kind`` and the SHA-256 of the token, never the token."""
    return digest_key(kind, hashlib.sha256(token.encode()).hexdigest())


def sessions_scope(customer_id: str) -> str:
    """The owner scope of every cached session validation of ``customer_id``."""
    return f"sessions-of:{customer_id}"


def digest_key(kind: str, digest: str) -> str:
    """The cache key of a credential known only by its SHA-256 (lower-case hex)."""
    return f"{kind}:{digest}"


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[T]):
    """A cached value with its freshness: use before ``fresh_until``; until ``stale_until``
    only when the platform cannot be asked."""

    value: T
    fresh_until: datetime
    stale_until: datetime
    tier: str = field(default="l1", compare=False)
    """The tier that answered (``l1``, ``l2``): for the lookup metric only."""
    owner: str | None = None
    """A second scope the entry belongs to (module docstring): the tier records the owner's
    generation when it stores the entry, and a lookup finds the entry only while that
    generation is unchanged. None: the entry has no owner."""

    def fresh_at(self, now: datetime) -> bool:
        return now < self.fresh_until


class PayloadCache(Protocol[T]):
    """What the access service needs from a cache tier."""

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        """The entry for ``key`` unless it is past ``stale_until`` (or was invalidated)."""
        ...

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        """Store ``entry`` until its ``stale_until``; ``customer_id`` scopes it to a customer.

        ``generation`` is the customer's generation when the value was asked for (see
        :meth:`generation`); if the customer has been invalidated since, the entry is stored
        where no lookup finds it. None: the current generation.
        """
        ...

    async def generation(self, customer_id: str) -> Generation:
        """The customer's current generation: read it before fetching, pass it to set."""
        ...

    async def invalidate_customer(self, customer_id: str) -> None:
        """Make every entry scoped to ``customer_id`` unreachable, in O(1)."""
        ...

    async def invalidate_all(self) -> None:
        """Make every entry unreachable, including values being fetched right now."""
        ...

    @property
    def tier(self) -> str:
        """The deepest tier a lookup consults (``l1``, ``l2``): misses are counted there."""
        ...


@runtime_checkable
class PeekableCache(Protocol[T]):
    """A tier that can answer from this process's memory without awaiting (the L1 tier, and
    tiers with one in front): for the WSGI middleware's synchronous path."""

    def peek(
        self, key: str, *, customer_id: str | None = None, now: datetime | None = None
    ) -> CacheEntry[T] | None:
        """What ``get`` would find in this process's memory, or None; never does I/O, never
        waits for anything but a short lock, and may be called from any thread. ``now``: the
        caller's clock reading, if it has one."""
        ...


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
        # key -> (entry, its scope's generation and its owner's when it was stored); least
        # recently used first. An entry of an older generation than its scope's is a miss
        # (dropped when a lookup finds it, replaced when the key is stored again).
        self._entries: OrderedDict[str, tuple[CacheEntry[T], int, int]] = OrderedDict()
        self._generations: dict[str, tuple[int, float]] = {}  # customer -> (generation, at)
        self._counter = itertools.count(1)
        # The generation of every customer without a record of its own: 0 until the first
        # invalidate_all, then a fresh one, so values asked for before it cannot be stored.
        self._floor = 0
        self._longest = 0.0  # seconds: the longest entry lifetime ever stored
        # Held by every operation: peek() runs on other threads than the loop's (module doc).
        self._lock = threading.Lock()

    def _timestamp(self) -> float:
        return self._clock().timestamp()

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
        the caller's clock reading, if it has one (else the clock is read)."""
        if now is None:
            now = self._clock()
        with self._lock:
            generation = self._floor
            if customer_id is not None:
                record = self._generations.get(customer_id)
                if record is not None:
                    generation = record[0]
            stored = self._entries.get(key)
            if stored is None:
                return None
            entry, stored_generation, owner_generation = stored
            if stored_generation != generation or now >= entry.stale_until:
                del self._entries[key]  # invalidated since it was stored, or dead
                return None
            if entry.owner is not None and self._generation(entry.owner) != owner_generation:
                return None  # its owner was invalidated after it was stored
            self._entries.move_to_end(key)
            return entry

    async def set(
        self,
        key: str,
        entry: CacheEntry[T],
        *,
        customer_id: str | None = None,
        generation: Generation | None = None,
    ) -> None:
        with self._lock:
            current = self._generation(customer_id)
            if generation is not None and generation != current:
                return  # invalidated since the value was asked for: nobody may find it
            now = self._timestamp()
            lifetime = entry.stale_until.timestamp() - now
            if lifetime <= 0:
                return
            self._longest = max(self._longest, lifetime)
            owner_generation = self._generation(entry.owner) if entry.owner is not None else 0
            entries = self._entries
            entries[key] = (entry, current, owner_generation)
            entries.move_to_end(key)
            if len(entries) > self._max_entries:
                entries.popitem(last=False)

    async def generation(self, customer_id: str) -> int:
        with self._lock:
            return self._generation(customer_id)

    async def invalidate_customer(self, customer_id: str) -> None:
        with self._lock:
            now = self._timestamp()
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

    def _forget_old_generations(self, now: float) -> None:
        horizon = now - self._longest
        self._generations = {
            customer: record
            for customer, record in self._generations.items()
            if record[1] >= horizon
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
