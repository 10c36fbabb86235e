"""Wiring of the access service for the app factory: caches, breaker, settings, one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from gateway.access.breaker import CircuitBreaker, GuardedPlatform
from gateway.access.cached import CachedAccess
from gateway.access.codecs import CachedAccessCodec, CustomerIdCodec
from gateway.access.identity import IdentityResolver
from gateway.access.service import AccessService, Platform
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.store.bus import InvalidationBus
from gateway.store.cache import Clock, PayloadCache
from gateway.store.coalesce import Coalescer, LocalCoalescer, RedisCoalescer
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_batch import GetBatcher
from gateway.store.redis_cache import Epoch, RedisCache
from gateway.store.redis_chain import chain_reader
from gateway.store.redis_generations import Generations
from gateway.store.redis_guard import RedisGuard

if TYPE_CHECKING:  # the client's type only: the store's modules talk to Redis
    import redis.asyncio as redis

T = TypeVar("T")

GENERATION_RECORDS = 65_536
"""The fewest generation records a process keeps in memory (``[cache] max_entries`` if more):
about 250 bytes each, far less than a cached answer, and L2 lookups beyond the L1's reach are
the ones they save a round trip for."""


utc_now: Clock = partial(datetime.now, UTC)
"""The clock: the current instant, aware, in UTC. ``datetime.now(UTC)`` itself, without a
Python function around it: a request reads the clock once or more, and a function would add
an interpreted call to each reading."""


def platform_breaker(settings: Settings, clock: Clock = utc_now) -> CircuitBreaker:
    """The circuit breaker configured in ``[platform]``."""
    return CircuitBreaker(
        "platform",
        settings.platform.breaker_failures,
        timedelta(seconds=settings.platform.breaker_open_seconds),
        clock,
    )


def build_redis_guard(settings: Settings, metrics: Metrics) -> RedisGuard:
    """The one guard (timeout, counting, breaker) for a process's Redis operations, configured
    in ``[cache]``; failures count in ``paywall_redis_errors_total``, operations the open
    breaker skipped in ``paywall_redis_skipped_total``."""
    cache = settings.cache
    return RedisGuard(
        timeout=cache.redis_timeout,
        on_error=metrics.redis_error,
        on_skip=metrics.redis_skipped,
        failures=cache.redis_breaker_failures,
        open_seconds=cache.redis_breaker_open_seconds,
    )


def build_access_service(
    settings: Settings,
    platform: Platform,
    metrics: Metrics,
    *,
    clock: Clock = utc_now,
    breaker: CircuitBreaker | None = None,
    redis_client: redis.Redis | None = None,
    redis_guard: RedisGuard | None = None,
    bus: InvalidationBus | None = None,
) -> AccessService:
    """The access service as the app factory wires it.

    ``platform`` is usually a :class:`~gateway.platform.PlenigoClient` (built with
    ``observer=metrics.observer``); it is put behind a circuit breaker configured in
    ``[platform]``. Sessions and access answers get one L1 cache each, ``cache.max_entries``
    apiece. ``clock`` (aware UTC) drives the caches and the decisions alike. Pass ``breaker``
    (see :func:`platform_breaker`) to watch its state, e.g. for a readiness check. With
    ``redis_client`` both caches are layered: the process's L1 in front of the shared Redis
    tier; every Redis operation goes through ``redis_guard`` (the process's one guard, see
    :func:`build_redis_guard`; made here if not given), and Redis failures never fail a
    request; on one Redis server (not a Cluster) a request whose session and access answer are
    both only in Redis reads them in one round trip. With ``bus`` the L1 caches hear every
    process's invalidations (the caller runs :meth:`InvalidationBus.run`). Entries close to
    their end are refreshed in the background (``cache.refresh_ahead``): the caller awaits
    :meth:`AccessService.close` at shutdown.
    """
    cache = settings.cache
    stale_if_error = timedelta(seconds=cache.stale_if_error)
    refresh_ahead = timedelta(seconds=cache.refresh_ahead)
    if breaker is None:
        breaker = platform_breaker(settings, clock)
    guarded = GuardedPlatform(platform, breaker)
    coalescer: Coalescer = LocalCoalescer()
    policy = settings.access.validity_policy()
    sessions: PayloadCache[str | None] = MemoryCache(cache.max_entries, clock)
    access: PayloadCache[CachedAccess] = MemoryCache(cache.max_entries, clock)
    if redis_client is not None:
        guard = redis_guard if redis_guard is not None else build_redis_guard(settings, metrics)
        publish = bus.publish if bus is not None else None
        session_l1: MemoryCache[str | None] = MemoryCache(cache.max_entries, clock)
        access_l1: MemoryCache[CachedAccess] = MemoryCache(cache.max_entries, clock)
        if bus is not None:
            bus.register(session_l1)
            bus.register(access_l1)
        calls = settings.platform
        # The longest one platform fetch can take: every attempt and backoff.
        flight = (
            calls.request_timeout * (calls.max_retries + 1)
            + calls.retry_backoff_max * calls.max_retries
        )
        epoch = Epoch(redis_client)  # one per process, re-read when the bus says so
        # The scopes' generation records, kept while the bus is subscribed (else read each time).
        generations = Generations(
            redis_client,
            max_entries=max(cache.max_entries, GENERATION_RECORDS),
            listening=bus.listening if bus is not None else None,
        )
        if bus is not None:
            bus.register(epoch)
            bus.register(generations)
        batcher = GetBatcher(redis_client)  # the lookups of one loop tick: one MGET
        # A session and the access answer after it in one round trip (None on a Cluster).
        chain = chain_reader(redis_client, timeout=guard.timeout)

        def layered(
            l1: MemoryCache[T], namespace: str, codec: EntryCodec[T], life: float
        ) -> LayeredCache[T]:
            # Records of a generation outlive every entry stored under the one they replaced.
            l2 = RedisCache(
                redis_client,
                namespace,
                codec,
                clock,
                epoch=epoch,
                generations=generations,
                batcher=batcher,
                chain=chain,
                max_lifetime=life,
                generation_ttl=life + flight,
            )
            return LayeredCache(l1, l2, guard=guard, publish=publish)

        session_life = max(cache.session_ttl + cache.stale_if_error, cache.invalid_session_ttl)
        sessions = layered(session_l1, "session", EntryCodec(CustomerIdCodec()), session_life)
        access_life = settings.access.max_ttl + cache.stale_if_error
        # The decision travels with the payload, for readers under the same policy (codecs).
        access_codec = EntryCodec(CachedAccessCodec(policy))
        access = layered(access_l1, "access", access_codec, access_life)
        coalescer = RedisCoalescer(
            redis_client,
            # Longer than the holder's whole fetch, so the marker outlives a slow platform;
            # waiters give up after one request timeout.
            lock_ttl=flight,
            wait=calls.request_timeout,
            guard=guard,
            coalesced=metrics.coalesced_call,
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
        refresh_ahead=refresh_ahead,
    )
    return AccessService(
        routes=settings.route_table(),
        identity=identity,
        provider=guarded,
        cache=access,
        policy=policy,
        clock=clock,
        metrics=metrics,
        stale_if_error=stale_if_error,
        on_api_error=settings.access.on_api_error,
        coalescer=coalescer,
        refresh_ahead=refresh_ahead,
    )
