"""The gateway's resources, started and stopped the same way by every driver.

Each resource is an async context manager of its own: the platform client (its HTTP session),
the Redis tier when ``[cache] redis_url`` is set (client, breaker, invalidation bus), and the
access service on top of them (its background refreshes stop before the clients they use
close). The aiohttp app enters each in a ``cleanup_ctx`` entry of its own; the ASGI and WSGI
middleware enter them all with :func:`open_runtime`. Everything must run on the event loop
that will use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as redis

from gateway.access.breaker import CircuitBreaker
from gateway.access.build import build_access_service, build_redis_guard, platform_breaker
from gateway.access.service import AccessService
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.store.bus import InvalidationBus
from gateway.store.cache import Clock
from gateway.store.redis_connect import connect_redis
from gateway.store.redis_guard import RedisGuard

__all__ = [
    "Platform",
    "RedisTier",
    "Runtime",
    "open_platform",
    "open_redis",
    "open_runtime",
    "open_service",
]


@dataclass
class Platform:
    client: PlenigoClient
    breaker: CircuitBreaker


@dataclass
class RedisTier:
    client: redis.Redis
    guard: RedisGuard
    bus: InvalidationBus


@dataclass
class Runtime:
    """What the running gateway holds."""

    settings: Settings
    metrics: Metrics
    service: AccessService
    breaker: CircuitBreaker
    redis: RedisGuard | None = None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz: not ready while the platform breaker is open. Redis
        trouble is reported ("degraded", or "open" while its breaker skips Redis) but keeps the
        gateway ready: it still answers, from L1 and the platform."""
        state = self.breaker.state
        redis_state = "off" if self.redis is None else self.redis.state
        return state != "open", {"config": "loaded", "platform": state, "redis": redis_state}


def _platform_session() -> aiohttp.ClientSession:
    """The client session for the platform API: pooled keep-alive, no cookies, no env proxy."""
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    )


@contextlib.asynccontextmanager
async def open_platform(
    settings: Settings, metrics: Metrics, clock: Clock
) -> AsyncIterator[Platform]:
    """The platform client and its circuit breaker."""
    async with _platform_session() as session:
        client = PlenigoClient(session, settings.platform, clock=clock, observer=metrics.observer)
        yield Platform(client, platform_breaker(settings, clock))


@contextlib.asynccontextmanager
async def open_redis(settings: Settings, metrics: Metrics) -> AsyncIterator[RedisTier | None]:
    """The Redis tier when ``[cache] redis_url`` is set (else None): client, breaker and the
    invalidation bus, whose subscription runs until the context ends."""
    if not settings.cache.redis_url:
        yield None
        return
    client = connect_redis(
        settings.cache.redis_url, connect_timeout=max(settings.cache.redis_timeout, 0.5)
    )
    try:
        guard = build_redis_guard(settings, metrics)
        bus = InvalidationBus(client, guard=guard)
        task = asyncio.create_task(bus.run(), name="paywall-invalidation-bus")
        try:
            yield RedisTier(client, guard, bus)
        finally:
            await _cancelled(task)
    finally:
        await client.aclose()


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every 0.1 s while it
    runs on. The invalidation bus's listener was seen once to read on after its cancellation
    (``paywall-gateway invalidate`` hung in CI, the loop polling with the 1 s timeout of the
    listener's ``get_message``). Where the cancellation was lost was not pinned down; a
    cancellation meeting the expiry of that read's own timeout, which ``get_message`` takes for
    "no message", is the likely place. Waiting for a single cancellation would wait forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def open_service(
    settings: Settings,
    metrics: Metrics,
    clock: Clock,
    platform: Platform,
    tier: RedisTier | None,
) -> AsyncIterator[Runtime]:
    """The access service on the platform client and the Redis tier."""
    service = build_access_service(
        settings,
        platform.client,
        metrics,
        clock=clock,
        breaker=platform.breaker,
        redis_client=tier.client if tier else None,
        redis_guard=tier.guard if tier else None,
        bus=tier.bus if tier else None,
    )
    try:
        yield Runtime(settings, metrics, service, platform.breaker, tier.guard if tier else None)
    finally:
        await service.close()  # background refreshes, before the clients they use close


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, metrics: Metrics, clock: Clock
) -> AsyncIterator[Runtime]:
    """Every resource, in order; stopped in the reverse order."""
    async with (
        open_platform(settings, metrics, clock) as platform,
        open_redis(settings, metrics) as tier,
        open_service(settings, metrics, clock, platform, tier) as runtime,
    ):
        yield runtime
