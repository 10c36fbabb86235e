"""Wiring of the access service for the app factory: caches, breaker, settings, one clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis.asyncio as redis

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.service.access import AccessService, CachedAccess, Platform
from gateway.service.breaker import CircuitBreaker, GuardedPlatform
from gateway.service.bus import InvalidationBus
from gateway.service.cache import Clock, MemoryCache, PayloadCache
from gateway.service.coalesce import Coalescer, LocalCoalescer, RedisCoalescer
from gateway.service.codec import CachedAccessCodec, CustomerIdCodec, EntryCodec
from gateway.service.identity import IdentityResolver
from gateway.service.layered import LayeredCache
from gateway.service.redis_cache import RedisCache


def utc_now() -> datetime:
    return datetime.now(UTC)


def platform_breaker(settings: Settings, clock: Clock = utc_now) -> CircuitBreaker:
    """The circuit breaker configured in ``[platform]``."""
    return CircuitBreaker(
        "platform",
        settings.platform.breaker_failures,
        timedelta(seconds=settings.platform.breaker_open_seconds),
        clock,
    )


def build_access_service(
    settings: Settings,
    platform: Platform,
    metrics: Metrics,
    *,
    clock: Clock = utc_now,
    breaker: CircuitBreaker | None = None,
    redis_client: redis.Redis | None = None,
    on_redis_error: Callable[[str], None] | None = None,
    bus: InvalidationBus | None = None,
) -> AccessService:
    """The access service as the app factory wires it.

    ``platform`` is usually a :class:`~gateway.platform.PlenigoClient` (built with
    ``observer=metrics.observer``); it is put behind a circuit breaker configured in
    ``[platform]``. Sessions and access answers get one L1 cache each, ``cache.max_entries``
    apiece. ``clock`` (aware UTC) drives the caches and the decisions alike. Pass ``breaker``
    (see :func:`platform_breaker`) to watch its state, e.g. for a readiness check. With
    ``redis_client`` both caches are layered: the process's L1 in front of the shared Redis
    tier; Redis failures go to ``on_redis_error`` (default: the metric) and never fail a
    request. With ``bus`` the L1 caches hear every process's invalidations (the caller runs
    :meth:`InvalidationBus.run`).
    """
    cache = settings.cache
    stale_if_error = timedelta(seconds=cache.stale_if_error)
    if breaker is None:
        breaker = platform_breaker(settings, clock)
    guarded = GuardedPlatform(platform, breaker)
    coalescer: Coalescer = LocalCoalescer()
    sessions: PayloadCache[str | None] = MemoryCache(cache.max_entries, clock)
    access: PayloadCache[CachedAccess] = MemoryCache(cache.max_entries, clock)
    if redis_client is not None:
        report = on_redis_error or metrics.redis_error
        publish = bus.publish if bus is not None else None
        session_l1: MemoryCache[str | None] = MemoryCache(cache.max_entries, clock)
        access_l1: MemoryCache[CachedAccess] = MemoryCache(cache.max_entries, clock)
        if bus is not None:
            bus.register(session_l1)
            bus.register(access_l1)
        sessions = LayeredCache(
            session_l1,
            RedisCache(redis_client, "session", EntryCodec(CustomerIdCodec()), clock),
            timeout=cache.redis_timeout,
            on_error=report,
        )
        calls = settings.platform
        coalescer = RedisCoalescer(
            redis_client,
            # Longer than the holder's whole fetch (every attempt and backoff), so the marker
            # outlives a slow platform; waiters give up after one request timeout.
            lock_ttl=calls.request_timeout * (calls.max_retries + 1)
            + calls.retry_backoff_max * calls.max_retries,
            wait=calls.request_timeout,
            timeout=cache.redis_timeout,
            on_error=report,
            coalesced=metrics.coalesced_call,
        )
        access = LayeredCache(
            access_l1,
            RedisCache(redis_client, "access", EntryCodec(CachedAccessCodec()), clock),
            timeout=cache.redis_timeout,
            on_error=report,
            publish=publish,
        )
    identity = IdentityResolver(
        guarded,
        sessions,
        clock,
        metrics,
        session_ttl=timedelta(seconds=cache.session_ttl),
        invalid_session_ttl=timedelta(seconds=cache.invalid_session_ttl),
        stale_if_error=stale_if_error,
        coalescer=coalescer,
    )
    return AccessService(
        routes=settings.route_table(),
        identity=identity,
        provider=guarded,
        cache=access,
        policy=settings.access.validity_policy(),
        clock=clock,
        metrics=metrics,
        stale_if_error=stale_if_error,
        on_api_error=settings.access.on_api_error,
        coalescer=coalescer,
    )
