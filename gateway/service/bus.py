"""Invalidations reach every process's L1 through Redis pub/sub.

An invalidation moves a scope (a customer, a session) to a new generation in Redis, or
everything to a new epoch (the shared tier can no longer find the old answers), and is
published on ``pwg:v1:invalidate`` (the scope, or ``*`` for everything); every gateway process
listens and applies it to what it registered: its L1 caches, and its copy of the epoch.
Pub/sub delivers at most once and nothing while a process is disconnected, so a listener that
(re)connects after having been connected before clears its L1 caches entirely (and re-reads the
epoch): whatever it missed cannot be served afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import redis.asyncio as redis

from gateway.service.cache import PREFIX
from gateway.service.redis_guard import FAILURES, RedisGuard

log = logging.getLogger(__name__)

CHANNEL = f"{PREFIX}:invalidate"
ALL = "*"  # the message that clears every L1


class LocalCache(Protocol):
    async def invalidate_customer(self, customer_id: str) -> None: ...

    async def invalidate_all(self) -> None: ...


class InvalidationBus:
    """Publishes invalidations and applies everyone's to this process's L1 caches.

    A lost subscription is reported to the process's ``guard`` (counted, and it feeds the
    breaker); the listener reconnects every ``retry_delay`` seconds on its own schedule.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        guard: RedisGuard,
        retry_delay: float = 0.5,
    ) -> None:
        self._client = client
        self._guard = guard
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

    async def _reconnected(self) -> None:
        # Messages sent while we were away are lost: forget everything.
        await self._apply(ALL)
        log.info("invalidation bus reconnected; local caches cleared")

    async def _on_connect(self, connection: object) -> None:
        """redis-py's hook, called on every reconnect of the subscription's connection."""
        await self._reconnected()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after failures."""
        subscribed_before = False
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if subscribed_before:
                        await self._reconnected()
                    subscribed_before = True
                    # redis-py reconnects and re-subscribes a broken subscription by itself,
                    # without telling us: hear of it through the connection's connect hook.
                    connection = pubsub.connection
                    if connection is not None:
                        connection.register_connect_callback(self._on_connect)
                    self.connected.set()
                    while True:
                        message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            data = message["data"]
                            customer = data.decode() if isinstance(data, bytes) else str(data)
                            await self._apply(customer)
            except FAILURES as exc:
                self.connected.clear()
                self._guard.failed("subscribe", exc)
                log.debug("invalidation bus disconnected: %r", exc)
                await asyncio.sleep(self._retry_delay)
