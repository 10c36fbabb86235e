"""A process's copy of the scopes' generation records, so an L2 lookup costs one round trip.

:class:`~gateway.store.redis_cache.RedisCache` builds every scoped key from the scope's
generation (``pwg:v1:<namespace>:gen:<scope>``), and an owned entry is checked against its
owner's. Reading those records from Redis on every lookup costs a round trip each, before the
entry can even be asked for. :class:`Generations` keeps the records this process has read, for
all its Redis caches, and answers from memory while that is as good as asking Redis:

* **Only while the invalidation bus is subscribed** (``listening()``). Every change of a record
  is an invalidation, and every invalidation is published with its scope after the record was
  written (:class:`~gateway.store.bus.InvalidationBus`); the bus drops the scope here when the
  message arrives, and forgets everything whenever it (re)subscribes, since messages sent while
  it was away are lost. Without a bus, before the first subscription and while it is lost,
  every lookup reads the record from Redis, as if this class did not exist, and nothing read
  then is kept.
* **A read that was in flight while the scope was invalidated is not kept.** It may have been
  answered before the new record was written, and the message that would correct it has
  already been applied. Each read in flight is registered under its key; an invalidation of
  the scope (from the bus, or this process's own) and a forget-everything mark the reads of the
  scope (or all reads) stale, and a stale read only answers the lookup that made it, which was
  concurrent with the invalidation anyway.
* **The invalidating process drops its own copy at once** (:meth:`forget`, right after the
  new record is written), before its message comes back to it.
* **A record that expires** (``generation_ttl``: the scope silently goes back to generation 0)
  is read with its remaining lifetime, and the copy is not used past it. An expired record is
  not an invalidation (the entries it hid are gone by then), so this only keeps the processes
  agreeing on one key per answer; correctness does not depend on it.
* **Bounded**: at most ``max_entries`` records, least recently used dropped first; a dropped
  one is simply read again.

A record read while listening costs one round trip (GET and PTTL pipelined); afterwards a lookup
of the scope costs none for it. The clock is monotonic seconds (the records' lifetimes are
Redis's, not the caches' clock). A session lookup chained with its access lookup
(:mod:`~gateway.store.redis_chain`) needs none of this: its script reads the records inside
Redis, in the same round trip.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import DataError


def record_key(namespace: str, scope: str) -> str:
    """The Redis key of ``scope``'s generation record in the cache ``namespace``."""
    return f"{namespace}:gen:{scope}"


def generation_of(raw: object) -> int:
    """A record's value as Redis returns it; no record is generation 0. Anything but an
    integer is a :class:`~redis.exceptions.DataError`: a failure of the shared tier like any
    other (counted, the lookup a miss), never an error of the request."""
    if raw is None:
        return 0
    if isinstance(raw, bytes | str | int):
        try:
            return int(raw)
        except ValueError:
            pass
    raise DataError(f"a generation record holds an integer, not {raw!r}")


class _Read:
    """One read of a record in flight; ``stale`` once its scope was invalidated meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class Generations:
    """The generation records of a process's Redis caches (module docstring).

    ``listening``: whether the invalidation bus is subscribed right now (None: no bus, never
    trusted, every lookup asks Redis). Register the object with the bus
    (:meth:`~gateway.store.bus.InvalidationBus.register`) so its invalidations reach it.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_entries: int = 65_536,
        listening: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._client = client
        self._max_entries = max_entries
        self._listening = listening
        self._clock = clock
        self._namespaces: set[str] = set()
        # record key -> (generation, until when the copy may be used: the record's expiry)
        self._known: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._reading: dict[str, set[_Read]] = {}  # record key -> its reads in flight
        self.changes = 0
        """Invalidations this process has learnt of (its own and the bus's), reconnects
        included: a caller that sees it move while it waited on Redis knows its answer may
        predate one of them."""

    def register(self, namespace: str) -> None:
        """A cache (``pwg:v1:<name>``) keeps its records here: the bus's invalidation of a
        scope reaches its record in every registered namespace."""
        self._namespaces.add(namespace)

    @property
    def trusted(self) -> bool:
        """Whether copies are used (and kept) right now: the bus is subscribed."""
        return self._listening is not None and self._listening()

    def __len__(self) -> int:
        return len(self._known)

    async def current(self, key: str) -> int:
        """The record's generation: this process's copy while it is trusted, else Redis's."""
        if not self.trusted:
            return generation_of(await self._client.get(key))
        known = self._known.get(key)
        if known is not None:
            generation, until = known
            if self._clock() < until:
                self._known.move_to_end(key)
                return generation
            del self._known[key]
        return await self._read(key)

    async def _read(self, key: str) -> int:
        read = _Read()
        self._reading.setdefault(key, set()).add(read)
        started = self._clock()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, ttl_ms = await pipe.execute()
        finally:
            reads = self._reading.get(key)
            if reads is not None:
                reads.discard(read)
                if not reads:
                    del self._reading[key]
        generation = generation_of(raw)
        # Absent, or without an expiry: only an invalidation changes it. Else counted from
        # before the question, so never past the record's real expiry (-2: it expired between
        # the two commands, and this copy is not kept).
        forever = raw is None or ttl_ms == -1
        until = math.inf if forever else started + int(ttl_ms) / 1000
        if not read.stale and self.trusted and self._clock() < until:
            self._known[key] = (generation, until)
            self._known.move_to_end(key)
            while len(self._known) > self._max_entries:
                self._known.popitem(last=False)
        return generation

    def forget(self, key: str) -> None:
        """Drop the copy of one record, and keep none that a read in flight brings back."""
        self.changes += 1
        self._known.pop(key, None)
        for read in self._reading.pop(key, ()):
            read.stale = True

    async def invalidate_customer(self, customer_id: str) -> None:
        """The bus delivered an invalidation of the scope ``customer_id``: in every cache."""
        for namespace in self._namespaces:
            self.forget(record_key(namespace, customer_id))

    async def invalidate_all(self) -> None:
        """Everything was invalidated, or the bus (re)subscribed: forget every copy."""
        self.changes += 1
        self._known.clear()
        for reads in self._reading.values():
            for read in reads:
                read.stale = True
        self._reading.clear()
