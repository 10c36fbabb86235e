"""Wiring of the access service for the app factory: caches, breaker, settings, one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.service.access import AccessService, Platform
from gateway.service.breaker import CircuitBreaker, GuardedPlatform
from gateway.service.cache import Clock, MemoryCache
from gateway.service.identity import IdentityResolver


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
) -> AccessService:
    """The access service as the app factory wires it.

    ``platform`` is usually a :class:`~gateway.platform.PlenigoClient` (built with
    ``observer=metrics.observer``); it is put behind a circuit breaker configured in
    ``[platform]``. Sessions and access answers get one L1 cache each, ``cache.max_entries``
    apiece. ``clock`` (aware UTC) drives the caches and the decisions alike. Pass ``breaker``
    (see :func:`platform_breaker`) to watch its state, e.g. for a readiness check.
    """
    cache = settings.cache
    stale_if_error = timedelta(seconds=cache.stale_if_error)
    if breaker is None:
        breaker = platform_breaker(settings, clock)
    guarded = GuardedPlatform(platform, breaker)
    sessions: MemoryCache[str | None] = MemoryCache(cache.max_entries, clock)
    identity = IdentityResolver(
        guarded,
        sessions,
        clock,
        metrics,
        session_ttl=timedelta(seconds=cache.session_ttl),
        invalid_session_ttl=timedelta(seconds=cache.invalid_session_ttl),
        stale_if_error=stale_if_error,
    )
    return AccessService(
        routes=settings.route_table(),
        identity=identity,
        provider=guarded,
        cache=MemoryCache(cache.max_entries, clock),
        policy=settings.access.validity_policy(),
        clock=clock,
        metrics=metrics,
        stale_if_error=stale_if_error,
        on_api_error=settings.access.on_api_error,
    )
