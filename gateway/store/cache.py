"""The cache interface of the access service and its entries. The in-process (L1) tier is
:mod:`gateway.store.memory`'s :class:`~gateway.store.memory.MemoryCache`.

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
holds a copy of the owner's record (:mod:`gateway.store.redis_generations`), else one Redis
read. Session
validations are owned by ``sessions-of:<customer id>`` (:func:`sessions_scope`): per-customer
session invalidation (a CUSTOMER CHANGE or DELETION callback). Across processes an owner scope
is invalidated like any other scope: a new generation record in Redis, and a message on the
invalidation bus naming the scope, which every process applies to its L1. The owner's generation
is recorded when the entry is stored, i.e. after the platform answered: an invalidation that
the storing process learns of between the platform's answer and the store is not seen (a window
of microseconds; one the process learns of only after the store hides the entry, the safe
side). When L1 forgets an old generation record (see
:class:`~gateway.store.memory.MemoryCache`), entries stored under it no longer match and
count as misses: a needless revalidation, never a stale hit.

Keys are built by the caller and never hold a raw credential: sessions are keyed by a SHA-256 of
the token (:func:`token_key`, from the compiled :mod:`gateway.store.keys`).

Time: the caller's clock returns aware datetimes (the core's unit). A caller that has already
read the clock for this request hands the reading to the L1 tier's ``peek`` (``now``) instead
of having it read again.

Memory: an L1 holds one entry per cached session and per cached access answer (100,000
customers: 200,000 entries, and issue 12's target is 100 MB for them), so its records are kept
small without changing what a lookup returns. :class:`CacheEntry` keeps only its value,
``fresh_until`` and a *shape*: the distance from ``fresh_until`` to ``stale_until`` (one
``stale_if_error`` for nearly every entry) and the owner, where "the sessions scope of my
value" (every session validation's) is a marker instead of a string; the few distinct shapes
are shared between entries. ``stale_until`` and ``owner`` are rebuilt when read (exactly: a
shape is shared only if adding the distance gives back the very same datetime), which a
lookup does only for an entry past ``fresh_until`` or while some scope has a generation
record. The L1 tier stores the entry itself, without the tuple of its generations,
when both are the floor (the usual case). The LRU stays an ``OrderedDict``: a plain dict's
re-insertion on every hit leaves holes that its first-in-order lookup (the eviction) must
walk, tens of microseconds per eviction in a full cache.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import FrozenInstanceError
from datetime import datetime
from typing import Generic, Protocol, TypeVar, runtime_checkable

from gateway.store.entries import (
    SESSIONS_PREFIX,
    Shape,
    in_tier,
    owner_of,
    register_classes,
    shape,
    stale_until_of,
)

# Re-exported: the module docstring says how keys are built (the functions are compiled there).
from gateway.store.keys import digest_key as digest_key
from gateway.store.keys import token_key as token_key

T = TypeVar("T")
Clock = Callable[[], datetime]
"""An aware-datetime clock (UTC); the same one drives the decision core."""

PREFIX = "pwg:v1"
"""Every key, channel and marker this gateway keeps in Redis starts with it (the format's
version: a changed format gets a new prefix and never reads the old one)."""

Generation = Hashable
"""A customer's generation as a tier reports it: opaque to callers, who only hand it back to
``set`` and use it in flight keys (one tier: an int; layered tiers: a tuple of theirs)."""


def sessions_scope(customer_id: str) -> str:
    """The owner scope of every cached session validation of ``customer_id``."""
    return SESSIONS_PREFIX + customer_id


class CacheEntry(Generic[T]):
    """A cached value with its freshness: use before ``fresh_until``; until ``stale_until``
    only when the platform cannot be asked. Immutable, compared like a dataclass (``tier``
    left out).

    Not a dataclass: an L1 tier holds one per cached answer, so it is built small (module
    docstring, "Memory"). ``stale_until`` and ``owner`` live in one shared *shape* and are
    rebuilt when read, which a fresh hit never does; ``tier`` is a class attribute (``l1``) and
    a slot only in the subclass made for the other tiers. Three slots instead of five, and no
    datetime of its own for ``stale_until``.
    """

    __slots__ = ("_shape", "fresh_until", "value")

    value: T
    fresh_until: datetime
    tier: str = "l1"
    """The tier that answered (``l1``, ``l2``): for the lookup metric only."""
    _shape: Shape

    def __new__(
        cls,
        value: T,
        fresh_until: datetime,
        stale_until: datetime,
        tier: str = "l1",
        owner: str | None = None,
    ) -> CacheEntry[T]:
        return object.__new__(cls if tier == "l1" else _TierEntry)

    def __init__(
        self,
        value: T,
        fresh_until: datetime,
        stale_until: datetime,
        tier: str = "l1",
        owner: str | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "value", value)
        setter(self, "fresh_until", fresh_until)
        setter(self, "_shape", shape(value, fresh_until, stale_until, owner))
        if tier != "l1":
            setter(self, "tier", tier)

    @property
    def stale_until(self) -> datetime:
        return stale_until_of(self)

    @property
    def owner(self) -> str | None:
        """A second scope the entry belongs to (module docstring): the tier records the owner's
        generation when it stores the entry, and a lookup finds the entry only while that
        generation is unchanged. None: the entry has no owner."""
        return owner_of(self)

    def fresh_at(self, now: datetime) -> bool:
        return now < self.fresh_until

    def in_tier(self, tier: str) -> CacheEntry[T]:
        """This entry as answered by ``tier``: equal to it, made from its parts as they are
        (``CacheEntry(value, fresh_until, stale_until, tier, owner)`` would only compute the
        same shape again)."""
        return in_tier(self, tier)

    def _fields(self) -> tuple[object, ...]:
        return (self.value, self.fresh_until, self.stale_until, self.owner)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CacheEntry):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"CacheEntry(value={self.value!r}, fresh_until={self.fresh_until!r}, "
            f"stale_until={self.stale_until!r}, tier={self.tier!r}, owner={self.owner!r})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[object, ...]:
        return (
            CacheEntry,
            (self.value, self.fresh_until, self.stale_until, self.tier, self.owner),
        )


class _TierEntry(CacheEntry[T]):
    """An entry answered by another tier than ``l1``: the tier is a slot of its own."""

    __slots__ = ("tier",)


register_classes(CacheEntry, _TierEntry)


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
