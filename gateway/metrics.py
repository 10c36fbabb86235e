"""Prometheus metrics of one gateway instance.

:class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, built by the app
factory (or a test); nothing is registered at import time. Label values are fixed sets (modes,
outcomes, endpoints, statuses): never a token, path or customer id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Decisions served from a cache take microseconds, platform round trips milliseconds to seconds.
DECISION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
PLATFORM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every ``paywall_*`` metric of the gateway, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "paywall_requests_total",
            "Requests decided, by front-end mode and outcome.",
            ["mode", "outcome"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "paywall_decision_seconds",
            "Time to decide one request, platform calls included.",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "paywall_cache_lookups_total",
            "Cache lookups by cache (session, access), tier (l1, l2) and result "
            "(hit, miss, stale).",
            ["cache", "tier", "result"],
            registry=r,
        )
        self.platform_requests = Counter(
            "paywall_platform_requests_total",
            "HTTP attempts to the platform API, by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.platform_seconds = Histogram(
            "paywall_platform_request_seconds",
            "Duration of one HTTP attempt to the platform API.",
            ["endpoint"],
            buckets=PLATFORM_BUCKETS,
            registry=r,
        )
        self.coalesced = Counter(
            "paywall_coalesced_total",
            "Requests that joined a platform call already in flight instead of making one.",
            registry=r,
        )
        self.invalidations = Counter(
            "paywall_invalidations_total",
            "Cache invalidations (a customer, a session or everything), by source (callback, "
            "admin).",
            ["source"],
            registry=r,
        )
        self.callbacks = Counter(
            "paywall_callbacks_total",
            "Platform callbacks received, by entity type and callback type (the platform's "
            "documented names; 'other' for any other, 'none' before the body was read) and "
            "result.",
            ["entity_type", "callback_type", "result"],
            registry=r,
        )
        self.redis_errors = Counter(
            "paywall_redis_errors_total",
            "Redis operations that failed or timed out (answered from L1 and the platform).",
            ["operation"],
            registry=r,
        )
        self.refreshes = Counter(
            "paywall_refreshes_total",
            "Background refreshes of cache entries close to their end, by cache (access, "
            "session) and result (started, succeeded, failed).",
            ["cache", "result"],
            registry=r,
        )
        self.redis_skips = Counter(
            "paywall_redis_skipped_total",
            "Redis operations not attempted because the Redis breaker was open (answered from "
            "L1 and the platform).",
            ["operation"],
            registry=r,
        )
        # Resolved children for the per-request paths: labels() costs a dict lookup and a lock.
        self._lookup_children: dict[tuple[str, str, str], Counter] = {}
        self._request_children: dict[tuple[str, str], Counter] = {}

    def observer(self, endpoint: str, status: str, seconds: float) -> None:
        """PlenigoClient's per-attempt observer: counts the attempt and times it."""
        self.platform_requests.labels(endpoint, status).inc()
        self.platform_seconds.labels(endpoint).observe(seconds)

    def cache_lookup(self, cache: str, result: str, tier: str = "l1") -> None:
        key = (cache, tier, result)
        child = self._lookup_children.get(key)
        if child is None:
            child = self._lookup_children[key] = self.cache_lookups.labels(cache, tier, result)
        child.inc()

    def request(self, mode: str, outcome: str, seconds: float) -> None:
        """One decided request: front-ends call this with their mode and the verdict."""
        key = (mode, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(mode, outcome)
        child.inc()
        self.decision_seconds.observe(seconds)

    def coalesced_call(self) -> None:
        self.coalesced.inc()

    def redis_error(self, operation: str) -> None:
        self.redis_errors.labels(operation).inc()

    def redis_skipped(self, operation: str) -> None:
        self.redis_skips.labels(operation).inc()

    def invalidation(self, source: str) -> None:
        self.invalidations.labels(source).inc()

    def callback(self, entity_type: str, callback_type: str, result: str) -> None:
        """One callback; the caller passes bounded label values only
        (:mod:`gateway.http.callbacks`)."""
        self.callbacks.labels(entity_type, callback_type, result).inc()

    def refresh(self, cache: str, result: str) -> None:
        self.refreshes.labels(cache, result).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent): for tests and health checks."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found

    def exposition(self) -> bytes:
        """The text format for ``/metrics``."""
        return generate_latest(self.registry)
