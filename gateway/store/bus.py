"""Invalidations reach every process's L1 through Redis pub/sub.

An invalidation moves a scope (a customer, a session) to a new generation in Redis, or
everything to a new epoch (the shared tier can no longer find the old answers), and is
published on ``pwg:v1:invalidate`` (the scope, or ``*`` for everything); every gateway process
listens and applies it to what it registered: its L1 caches, its copy of the epoch and its
copies of the generation records (:class:`~gateway.store.redis_generations.Generations`).
Pub/sub delivers at most once and nothing while a process is disconnected, so a listener that
subscribes again after having been subscribed before clears all of them entirely (and re-reads
the epoch): whatever it missed cannot be served afterwards.

"Subscribed" is Redis's confirmation of the SUBSCRIBE, not the command being sent: only from
then on is every later PUBLISH delivered. :attr:`InvalidationBus.connected` is set from that
confirmation (after the clearing, on a resubscription) until the subscription is known to be
lost: an error, or redis-py's silent reconnect of the subscription's connection (its connect
hook). The generation records are trusted only while it is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.client import PubSub

from gateway.store.cache import PREFIX
from gateway.store.redis_guard import FAILURES, RedisGuard

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
        # Set while subscribed (confirmed): the generation records are trusted only then.
        self.connected = asyncio.Event()
        self._subscribed_before = False

    def register(self, cache: LocalCache) -> None:
        self._caches.append(cache)

    def listening(self) -> bool:
        """Whether every invalidation published from now on reaches this process."""
        return self.connected.is_set()

    async def publish(self, customer_id: str) -> None:
        await self._client.publish(CHANNEL, customer_id)

    async def _apply(self, customer_id: str) -> None:
        for cache in self._caches:
            if customer_id == ALL:
                await cache.invalidate_all()
            else:
                await cache.invalidate_customer(customer_id)

    async def _subscribed(self) -> None:
        """Redis confirmed the subscription: every invalidation from now on reaches us."""
        if self._subscribed_before:
            # Messages sent while we were away are lost: forget everything.
            await self._apply(ALL)
            log.info("invalidation bus reconnected; local caches cleared")
        self._subscribed_before = True
        self.connected.set()

    async def _on_connect(self, connection: object) -> None:
        """redis-py's hook, called on every reconnect of the subscription's connection (it has
        just sent the SUBSCRIBE again; the confirmation follows as a message)."""
        self.connected.clear()
        await self._apply(ALL)

    async def _listen(self, pubsub: PubSub) -> None:
        """Apply every message until the subscription fails."""
        while True:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "subscribe":
                await self._subscribed()
            elif kind == "message":
                data = message["data"]
                customer = data.decode() if isinstance(data, bytes) else str(data)
                await self._apply(customer)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after failures."""
        while True:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=False) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # redis-py reconnects and re-subscribes a broken subscription by itself,
                    # without telling us: hear of it through the connection's connect hook.
                    # Only while it is ours: afterwards it goes back to the client's pool, and
                    # its reconnects there say nothing about the subscription.
                    connection = pubsub.connection
                    if connection is not None:
                        connection.register_connect_callback(self._on_connect)
                    try:
                        await self._listen(pubsub)
                    finally:
                        self.connected.clear()  # whatever ends it (also a cancellation)
                        if connection is not None:
                            connection.deregister_connect_callback(self._on_connect)
            except FAILURES as exc:
                self.connected.clear()
                self._guard.failed("subscribe", exc)
                log.debug("invalidation bus disconnected: %r", exc)
                await asyncio.sleep(self._retry_delay)
