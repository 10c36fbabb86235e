"""The shared tier (L2): a :class:`~gateway.store.cache.PayloadCache` in Redis.

Keys carry a format version, a namespace and the *epoch* (``pwg:v1:access:<epoch>:…``); callers
already hash every credential into their keys (:func:`~gateway.store.cache.token_key`).

* Scoped entries (a customer's access answers, a session's validation) also carry the scope's
  *generation* (``…@<generation>``), recorded in ``pwg:v1:<namespace>:gen:<scope>``.
  Invalidating a scope stores a new generation there: after that no lookup builds the old keys,
  and the old entries expire by their TTL. No SCAN, no KEYS. Generations are drawn from one
  counter (``pwg:v1:gen-counter``), so a value is never used twice, and a generation record
  expires ``generation_ttl`` seconds after it was written: by then every entry stored under the
  generation it replaced has expired too (entries live at most ``max_lifetime``, and a value
  asked for before the invalidation is stored within the flight time that ``generation_ttl``
  adds on top). Records therefore do not pile up with every logout.
* An entry with an owner (:attr:`~gateway.store.cache.CacheEntry.owner`: a session
  validation's customer) is stored with the owner scope's generation at that moment, and a
  lookup that finds it compares the owner's current generation and treats a changed one as a
  miss.
* The records are read through the process's
  :class:`~gateway.store.redis_generations.Generations`: while the invalidation bus is
  subscribed it keeps the records it has read, drops a scope's when the bus delivers its
  invalidation, and forgets them all when the bus reconnects; otherwise (no bus, or the bus is
  down) every lookup reads them from Redis. With the records known, a lookup is one GET (or
  its share of one MGET, with a ``batcher``), an owned entry included. An invalidation in
  another process is therefore seen by this process's L2 lookups once the bus delivered it,
  exactly as its L1 sees it; this process's own is seen at once.
* :meth:`RedisCache.get_chained` is a session's lookup and the access lookup that follows it
  (``<customer id><suffix>`` in another cache, scoped to the customer) in one round trip, with
  a ``chain`` reader (:mod:`~gateway.store.redis_chain`: a script that follows the chain
  inside Redis, reading the records there). Without one (a Cluster) it is :meth:`get` and the
  follow-up is left to its own lookup.
* :meth:`RedisCache.invalidate_all` moves to a new epoch (``INCR pwg:v1:epoch``). Each process
  keeps the epoch in memory (:class:`Epoch`, shared by its caches) and re-reads it when the
  invalidation bus says so or reconnects, so a lookup costs no extra round trip for it.

Entries expire in Redis at their ``stale_until``; a lookup also checks both instants against the
caller's clock, so a tier that runs behind Redis's clock never serves past ``stale_until``. A
value that cannot be decoded counts as a miss. Redis errors propagate: the caller
(:class:`~gateway.store.layered.LayeredCache`) bounds and absorbs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Final, Generic, TypeVar

import redis.asyncio as redis

from gateway.store.cache import PREFIX, CacheEntry, Clock, Generation
from gateway.store.codec import CodecError, EntryCodec
from gateway.store.entries import owner_of, stale_until_of
from gateway.store.redis_batch import GetBatcher
from gateway.store.redis_chain import ChainAnswer, ChainLookup, ChainReader
from gateway.store.redis_generations import Generations, generation_of, record_key

T = TypeVar("T")
U = TypeVar("U")

EPOCH_KEY = f"{PREFIX}:epoch"
COUNTER_KEY = f"{PREFIX}:gen-counter"


class Epoch:
    """A process's copy of the shared epoch; one object for all its Redis caches.

    :meth:`invalidate_all` (the invalidation bus calls it when any process invalidated
    everything, and after a reconnect) makes the next lookup read the epoch again. A read that
    was in flight meanwhile answers its own lookup but is not kept: it may be the old epoch.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._value: int | None = None
        self.changes = 0  # every advance and invalidate_all: reads in flight are not kept

    @property
    def known(self) -> int | None:
        """The epoch as this process knows it, without asking Redis; None when it must be read
        (:meth:`current`)."""
        return self._value

    async def current(self) -> int:
        if self._value is None:
            changes = self.changes
            raw = await self._client.get(EPOCH_KEY)
            value = generation_of(raw)  # an integer (no key: 0), else a DataError
            if changes == self.changes:
                self._value = value
            return value
        return self._value

    async def advance(self) -> None:
        value = int(await self._client.incr(EPOCH_KEY))
        self.changes += 1
        self._value = value

    async def invalidate_customer(self, customer_id: str) -> None:
        """Nothing to do: scopes have generations of their own (:class:`Generations`)."""

    async def invalidate_all(self) -> None:
        self.changes += 1
        self._value = None


class Prefetched(Generic[T]):
    """What Redis answered for a follow-up lookup of ``customer_id``'s entry, read with the
    lookup before it (:meth:`RedisCache.get_chained`): ``entry`` None is a miss, as
    :meth:`RedisCache.get` would have answered. (Not a dataclass: a compiled build cannot make
    one with a type parameter.)"""

    __slots__ = ("customer_id", "entry")

    def __init__(self, customer_id: str, entry: CacheEntry[T] | None) -> None:
        self.customer_id: Final = customer_id
        self.entry: Final = entry


class RedisCache(Generic[T]):
    """One cache (``namespace``: "access", "session") in a shared Redis.

    ``max_lifetime`` (seconds) caps every entry's TTL; ``generation_ttl`` is how long a scope's
    generation record lives after an invalidation (at least ``max_lifetime`` plus the longest a
    platform call can take). None: no cap, records never expire. ``epoch`` and
    ``generations`` are the process's (shared by its Redis caches, registered with its
    invalidation bus); without them the cache makes its own, and without a bus its generations
    are read from Redis on every lookup. With ``batcher`` (the process's, see
    :mod:`~gateway.store.redis_batch`) the entries that lookups of one event-loop tick ask
    for are read with one MGET. With ``chain`` (the process's, see
    :mod:`~gateway.store.redis_chain`) :meth:`get_chained` reads a session and the access
    answer that follows it in one round trip.
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
        generations: Generations | None = None,
        batcher: GetBatcher | None = None,
        chain: ChainReader | None = None,
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
        self.generations = generations if generations is not None else Generations(client)
        self.generations.register(self._namespace)
        self._records = record_key(self._namespace, "")  # + scope: a generation record's key
        self._batcher = batcher
        self._chain = chain
        self._max_lifetime_ms = None if max_lifetime is None else math.ceil(max_lifetime * 1000)
        self._generation_ttl_ms = (
            None if generation_ttl is None else math.ceil(generation_ttl * 1000)
        )

    @property
    def changes(self) -> int:
        """Moves whenever this process learns of an invalidation (any scope, or everything):
        an answer read while it moved may be one that invalidation hid (see
        :class:`~gateway.store.layered.LayeredCache`)."""
        return self.epoch.changes + self.generations.changes

    def generation_key(self, scope: str) -> str:
        return self._records + scope

    def _key(self, key: str, epoch: int, generation: int | None) -> str:
        if generation is None:
            return f"{self._namespace}:{epoch}:{key}"
        return f"{self._namespace}:{epoch}:{key}@{generation}"

    async def _scope_generation(self, scope: str) -> int:
        return await self.generations.current(self.generation_key(scope))

    async def generation(self, customer_id: str) -> tuple[int, int]:
        """(epoch, the scope's generation)."""
        return await self.epoch.current(), await self._scope_generation(customer_id)

    async def get(self, key: str, *, customer_id: str | None = None) -> CacheEntry[T] | None:
        epoch = await self.epoch.current()
        generation = None if customer_id is None else await self._scope_generation(customer_id)
        entry_key = self._key(key, epoch, generation)
        if self._batcher is not None:
            raw = await self._batcher.get(entry_key)
        else:
            raw = await self._client.get(entry_key)
        found = self._decoded(raw)
        if found is None:
            return None
        entry, owner_generation = found
        if entry.owner is not None and await self._scope_generation(entry.owner) != (
            owner_generation
        ):
            return None  # its owner was invalidated after it was stored
        return entry

    def _decoded(
        self, raw: object, now: datetime | None = None
    ) -> tuple[CacheEntry[T], int] | None:
        """The entry Redis answered and its owner's generation when stored; None for a miss:
        nothing, unreadable, or past ``stale_until`` at this tier's clock (``now``: a reading
        of it the caller has just made; else it is read)."""
        if not isinstance(raw, bytes):  # None: a miss (a str only with decode_responses=True)
            return None
        try:
            entry, owner_generation = self._codec.decode_owned(raw, self.tier)
        except CodecError:
            return None
        if (self._clock() if now is None else now) >= stale_until_of(entry):
            return None
        return entry, owner_generation

    def chains_with(self, then: RedisCache[U]) -> bool:
        """Whether :meth:`get_chained` reads ``then``'s entry in the same round trip."""
        return self._chain is not None and then._chain is self._chain

    async def get_chained(
        self, key: str, *, customer_id: str, then: RedisCache[U], suffix: str
    ) -> tuple[CacheEntry[T] | None, Prefetched[U] | None]:
        """:meth:`get`, and ``then.get(f"{customer}{suffix}", customer_id=customer)`` for the
        customer the entry found names (its value), in one round trip (module docstring).

        The second is None when it was not read: no entry, not one naming a customer, no
        ``chain``, or an owned entry there (its owner's record was not read with it)."""
        chain = self._chain
        if chain is None or then._chain is not chain:
            return await self.get(key, customer_id=customer_id), None
        if self.epoch.known is None:
            await self.epoch.current()
        if then.epoch.known is None:
            await then.epoch.current()
        lookup = self.chain_lookup(key, customer_id=customer_id, then=then, suffix=suffix)
        if lookup is None:  # an epoch forgotten meanwhile: read as get would
            return await self.get(key, customer_id=customer_id), None
        found = self.chained(await chain.read(lookup), then)
        if found is not None:
            return found
        # The script read the entry's owner otherwise (never seen): ask as get would.
        return await self.get(key, customer_id=customer_id), None

    def chain_lookup(
        self, key: str, *, customer_id: str, then: RedisCache[U], suffix: str
    ) -> ChainLookup | None:
        """What :meth:`get_chained` asks the ``chain`` reader; None when an epoch is not known
        in memory (only :meth:`get_chained` can read it)."""
        epoch, then_epoch = self.epoch.known, then.epoch.known
        if epoch is None or then_epoch is None:
            return None
        return ChainLookup(
            self._key("", epoch, None),
            self._records,
            customer_id,
            key,
            then._key("", then_epoch, None),
            then._records,
            suffix,
        )

    def submit_chained(
        self, lookup: ChainLookup, done: Callable[[ChainAnswer | Exception], None]
    ) -> None:
        """Hand :meth:`chain_lookup`'s ``lookup`` to the ``chain`` reader's batch (see
        :meth:`ChainReader.submit <gateway.store.redis_chain.ChainReader.submit>`)."""
        if self._chain is None:
            raise RuntimeError("no chain reader")
        self._chain.submit(lookup, done)

    def chained(
        self, answer: ChainAnswer, then: RedisCache[U]
    ) -> tuple[CacheEntry[T] | None, Prefetched[U] | None] | None:
        """:meth:`get_chained`'s answer from what the ``chain`` reader found for
        :meth:`chain_lookup`; None when only :meth:`get` can tell (the entry's owner was not
        the one the script read: never seen, as both decode the same bytes)."""
        if answer.entry is None:
            return None, None
        # One reading of the clock for both entries, decoded one after the other.
        now = self._clock()
        found = self._decoded(answer.entry, now)
        if found is None:
            return None, None
        entry, owner_generation = found
        owner = owner_of(entry)
        if owner is not None:
            # Compared exactly here: the script's own check (on doubles) only chose its way.
            if answer.owner != owner.encode():
                return None
            if generation_of(answer.owner_record) != owner_generation:
                return None, None
        customer = entry.value
        if answer.customer is None or not (
            isinstance(customer, str) and answer.customer == customer.encode()
        ):
            return entry, None
        then_found = then._decoded(answer.then_entry, now if then._clock is self._clock else None)
        if then_found is None:
            return entry, Prefetched(customer, None)
        then_entry, _ = then_found
        if owner_of(then_entry) is not None:
            return entry, None
        return entry, Prefetched(customer, then_entry)

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
        key = self.generation_key(customer_id)
        generation = await self._client.incr(COUNTER_KEY)
        try:
            await self._client.set(key, generation, px=self._generation_ttl_ms)
        finally:
            # At once, not when the bus brings the message back: this process's next lookup
            # reads the new record (also if the SET failed after reaching Redis).
            self.generations.forget(key)

    async def invalidate_all(self) -> None:
        await self.epoch.advance()
