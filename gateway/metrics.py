"""Prometheus metrics of one gateway instance.

:class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`, built by the app
factory (or a test); nothing is registered at import time. Label values are fixed sets (modes,
outcomes, endpoints, statuses): never a token, path or customer id.

The metrics every request updates (``paywall_requests_total``, ``paywall_decision_seconds``,
``paywall_cache_lookups_total``) are plain numbers, each thread's own, turned into samples when
``/metrics`` is scraped (:class:`HotPath`): a prometheus_client child's ``inc`` takes its own
lock and a histogram's ``observe`` walks its buckets, which together cost a cached decision
more than the lookups themselves.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from threading import get_ident

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _Counts:
    """One thread's share of :class:`HotPath`'s numbers; only that thread changes them.

    Counted by label, one level per label (``requests[mode][outcome]``,
    ``lookups[cache][tier][result]``): a label value is a str whose hash Python keeps, where a
    tuple of them is made and hashed again for every update."""

    def __init__(self, buckets: int) -> None:
        self.requests: dict[str, dict[str, int]] = {}
        self.lookups: dict[str, dict[str, dict[str, int]]] = {}
        self.buckets = [0] * buckets
        self.seconds = 0.0


class HotPath(Collector):
    """The per-request counters and the decision-time histogram, as plain numbers.

    Safe from any thread (the WSGI middleware counts on its worker threads) without a lock per
    update: each thread counts in its own :class:`_Counts` (found by its thread id; a thread
    that ends leaves its numbers to the next one given that id, never to two threads at once),
    and the scrape adds them up. A scrape copies each thread's dictionaries whole (one C call
    under the GIL), so it sees every update made before it, give or take the one in flight.
    Measured compiled, a lock taken and released per update cost about a thousand instructions
    of the two lookups and the request a cached decision counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a thread's first update, and the scrape
        self._threads: dict[int, _Counts] = {}
        self._last: tuple[int, _Counts | None] = (-1, None)  # the last thread that counted
        # The bounds as a list of float objects: compiled, the module's tuple is kept unboxed,
        # and handing it to bisect_left boxed every bound again on every request.
        self._bounds: list[float] = list(DECISION_BUCKETS)

    def _counts(self) -> _Counts:
        ident = get_ident()
        last = self._last  # (replaced whole: any thread reads a matching pair)
        counts = last[1]
        if last[0] == ident and counts is not None:
            return counts
        counts = self._threads.get(ident)
        if counts is None:
            with self._lock:
                counts = self._threads.setdefault(ident, _Counts(len(self._bounds) + 1))
        self._last = (ident, counts)
        return counts

    def request(self, mode: str, outcome: str, seconds: float) -> None:
        counts = self._counts()
        outcomes = counts.requests.get(mode)
        if outcomes is None:
            outcomes = counts.requests[mode] = {}
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # "le" is inclusive: the first bound >= seconds (the last bucket: above every bound).
        counts.buckets[bisect_left(self._bounds, seconds)] += 1
        counts.seconds += seconds

    def lookup(self, cache: str, tier: str, result: str) -> None:
        lookups = self._counts().lookups
        tiers = lookups.get(cache)
        if tiers is None:
            tiers = lookups[cache] = {}
        results = tiers.get(tier)
        if results is None:
            results = tiers[tier] = {}
        results[result] = results.get(result, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests: dict[tuple[str, str], int] = {}
        lookups: dict[tuple[str, str, str], int] = {}
        buckets = [0] * (len(self._bounds) + 1)
        seconds = 0.0
        with self._lock:
            threads = list(self._threads.values())
        for counts in threads:
            for mode, outcomes in list(counts.requests.items()):
                for outcome, count in dict(outcomes).items():
                    key = (mode, outcome)
                    requests[key] = requests.get(key, 0) + count
            for cache, tiers in list(counts.lookups.items()):
                for tier, results in list(tiers.items()):
                    for result, count in dict(results).items():
                        names = (cache, tier, result)
                        lookups[names] = lookups.get(names, 0) + count
            for index, count in enumerate(list(counts.buckets)):
                buckets[index] += count
            seconds += counts.seconds
        family = CounterMetricFamily(
            "paywall_requests",
            "Requests decided, by front-end mode and outcome.",
            labels=["mode", "outcome"],
        )
        for labels, count in sorted(requests.items()):
            family.add_metric(list(labels), count)
        yield family
        family = CounterMetricFamily(
            "paywall_cache_lookups",
            "Cache lookups by cache (session, access), tier (l1, l2) and result "
            "(hit, miss, stale).",
            labels=["cache", "tier", "result"],
        )
        for names, count in sorted(lookups.items()):
            family.add_metric(list(names), count)
        yield family
        cumulative, pairs = 0, []
        for bound, count in zip((*DECISION_BUCKETS, float("inf")), buckets, strict=True):
            cumulative += count
            pairs.append((_bound_label(bound), cumulative))
        yield HistogramMetricFamily(
            "paywall_decision_seconds",
            "Time to decide one request, platform calls included.",
            buckets=pairs,
            sum_value=seconds,
        )


def _bound_label(bound: float) -> str:
    """A bucket's ``le`` as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """Every ``paywall_*`` metric of the gateway, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.hot = HotPath()
        r.register(self.hot)
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

    def observer(self, endpoint: str, status: str, seconds: float) -> None:
        """PlenigoClient's per-attempt observer: counts the attempt and times it."""
        self.platform_requests.labels(endpoint, status).inc()
        self.platform_seconds.labels(endpoint).observe(seconds)

    def cache_lookup(self, cache: str, result: str, tier: str = "l1") -> None:
        self.hot.lookup(cache, tier, result)

    def request(self, mode: str, outcome: str, seconds: float) -> None:
        """One decided request: front-ends call this with their mode and the verdict."""
        self.hot.request(mode, outcome, seconds)

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
