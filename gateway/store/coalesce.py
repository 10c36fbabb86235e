"""One platform call per key across processes and instances, not just within one.

In a process, :class:`~gateway.store.singleflight.SingleFlight` already makes concurrent
misses share one call. Across processes a short Redis marker does the same: the process that
sets ``pwg:v1:lock:<key>`` (``SET NX PX``) calls the platform and stores the answer in the
shared cache; the others poll the cache for that answer for at most ``wait`` seconds, then call
the platform themselves (a holder that died must not stall anybody for long). The marker
expires by itself after ``lock_ttl``, so a crashed holder cannot block the key either.

Redis trouble never blocks a request: a marker that cannot be set or read means "fetch".
Every operation goes through the process's :class:`~gateway.store.redis_guard.RedisGuard`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import redis.asyncio as redis

from gateway.store.cache import PREFIX, Clock, PayloadCache
from gateway.store.redis_guard import RedisGuard

T = TypeVar("T")
log = logging.getLogger(__name__)

# Delete the marker only if it is still ours (it may have expired and been taken by another).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """A result another process stored (``value`` may itself be None: an invalid session)."""

    value: T


async def stored_answer(
    cache: PayloadCache[T], key: str, scope: str, clock: Clock, ending: datetime | None = None
) -> Found[T] | None:
    """The ``stored`` of a coalesced fetch: a fresh entry another process stored meanwhile. For
    a refresh it must outlive the entry being replaced (``ending``): the process's own entry,
    still fresh, is not what the refresh waits for."""
    entry = await cache.get(key, customer_id=scope)
    now = clock()
    if entry is not None and max(now, ending or now) < entry.fresh_until:
        return Found(entry.value)
    return None


class Coalescer(Protocol):
    async def run(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        stored: Callable[[], Awaitable[Found[T] | None]],
    ) -> T:
        """``fetch()``, unless another process is already fetching ``key``: then what
        ``stored()`` finds once that process has stored it."""
        ...


class LocalCoalescer:
    """No other processes to coordinate with: just fetch."""

    async def run(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        stored: Callable[[], Awaitable[Found[T] | None]],
    ) -> T:
        return await fetch()


class RedisCoalescer:
    """Cross-process coalescing with a Redis marker per key.

    Every Redis operation goes through the process's :class:`RedisGuard`: a marker that
    cannot be set means "fetch", one that cannot be released expires by itself, and while the
    guard's breaker is open nobody waits for another process's answer.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_ttl: float,
        wait: float,
        guard: RedisGuard,
        poll: float = 0.01,
        coalesced: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._wait = wait
        self._guard = guard
        self._poll = poll
        self._coalesced = coalesced
        self._release = client.register_script(_RELEASE)

    async def run(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        stored: Callable[[], Awaitable[Found[T] | None]],
    ) -> T:
        marker = f"{PREFIX}:lock:{key}"
        token = secrets.token_hex(8)
        ok, claimed = await self._guard.call(
            "lock", self._client.set(marker, token, nx=True, px=self._lock_ttl_ms)
        )
        if not ok:
            return await fetch()
        if claimed:
            try:
                return await fetch()
            finally:
                # Not released (Redis failing): it expires by itself.
                await self._guard.call("unlock", self._release(keys=[marker], args=[token]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while loop.time() < deadline:
            await asyncio.sleep(self._poll)
            if self._guard.is_open:
                break  # Redis went away: whatever the holder stores, we cannot read it
            found = await stored()
            if found is not None:
                if self._coalesced is not None:
                    self._coalesced()
                return found.value
        log.debug("gave up waiting for another process's answer for %s", key)
        return await fetch()
