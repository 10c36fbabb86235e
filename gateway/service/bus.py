"""Invalidations reach every process's L1 through Redis pub/sub.

An invalidation bumps the customer's generation in Redis (the shared tier can no longer find the
old answers) and is published on ``pwg:v1:invalidate``; every gateway process listens and
invalidates the customer in its own L1 caches. Pub/sub delivers at most once and nothing while
a process is disconnected, so a listener that (re)connects after having been connected before
clears its L1 caches entirely: whatever it missed cannot be served afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "pwg:v1:invalidate"
ALL = "*"  # the message that clears every L1


class LocalCache(Protocol):
    async def invalidate_customer(self, customer_id: str) -> None: ...

    async def invalidate_all(self) -> None: ...


class InvalidationBus:
    """Publishes invalidations and applies everyone's to this process's L1 caches."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        on_error: Callable[[str], None],
        retry_delay: float = 0.5,
    ) -> None:
        self._client = client
        self._on_error = on_error
        self._retry_delay = retry_delay
        self._caches: list[LocalCache] = []
        self.connected = asyncio.Event()  # set while subscribed (tests and readiness)

    def register(self, cache: LocalCache) -> None:
        self._caches.append(cache)

    async def publish(self, customer_id: str) -> None:
        await self._client.publish(CHANNEL, customer_id)

    async def _apply(self, customer_id: str) -> None:
        for cache in self._caches:
            if customer_id == ALL:
                await cache.invalidate_all()
            else:
                await cache.invalidate_customer(customer_id)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after failures."""
        subscribed_before = False
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if subscribed_before:
                        # Messages sent while we were away are lost: forget everything.
                        await self._apply(ALL)
                        log.info("invalidation bus reconnected; local caches cleared")
                    subscribed_before = True
                    self.connected.set()
                    while True:
                        message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            customer = data.decode() if isinstance(data, bytes) else str(data)
                            await self._apply(customer)
            except (RedisError, OSError) as exc:
                self.connected.clear()
                self._on_error("subscribe")
                log.debug("invalidation bus disconnected: %r", exc)
                await asyncio.sleep(self._retry_delay)
