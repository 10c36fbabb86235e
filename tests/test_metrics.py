"""Metrics: private registries, the platform observer, and the per-request helpers."""

from __future__ import annotations

import sys
import threading

import pytest

from gateway.metrics import Metrics


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # no "Duplicated timeseries" error: nothing global
    first.coalesced_call()
    assert first.value("paywall_coalesced_total") == 1
    assert second.value("paywall_coalesced_total") == 0


def test_observer_counts_and_times_platform_attempts() -> None:
    metrics = Metrics()
    metrics.observer("has_access", "200", 0.012)
    metrics.observer("has_access", "timeout", 2.0)
    assert (
        metrics.value(
            "paywall_platform_requests_total", {"endpoint": "has_access", "status": "200"}
        )
        == 1
    )
    assert metrics.value("paywall_platform_request_seconds_count", {"endpoint": "has_access"}) == 2


def test_request_and_lookup_helpers() -> None:
    metrics = Metrics()
    metrics.request("proxy", "granted", 0.0002)
    metrics.cache_lookup("access", "hit")
    metrics.cache_lookup("access", "hit")
    metrics.invalidation("callback")
    assert metrics.value("paywall_requests_total", {"mode": "proxy", "outcome": "granted"}) == 1
    assert metrics.value("paywall_decision_seconds_bucket", {"le": "0.00025"}) == 1
    assert (
        metrics.value(
            "paywall_cache_lookups_total", {"cache": "access", "tier": "l1", "result": "hit"}
        )
        == 2
    )
    assert metrics.value("paywall_invalidations_total", {"source": "callback"}) == 1
    text = metrics.exposition().decode()
    for name in (
        "paywall_requests_total",
        "paywall_decision_seconds",
        "paywall_cache_lookups_total",
        "paywall_platform_requests_total",
        "paywall_platform_request_seconds",
        "paywall_coalesced_total",
        "paywall_invalidations_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_decision_buckets_are_inclusive_and_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.0001, 0.00010001, 2.5, 7.0):
        metrics.request("auth_request", "granted", seconds)

    def bucket(le: str) -> float:
        return metrics.value("paywall_decision_seconds_bucket", {"le": le})

    assert bucket("0.0001") == 1  # a value equal to a bound is in that bucket ("le")
    assert bucket("0.00025") == 2
    assert bucket("1.0") == 2
    assert bucket("2.5") == 3
    assert bucket("+Inf") == 4
    assert metrics.value("paywall_decision_seconds_count") == 4
    assert metrics.value("paywall_decision_seconds_sum") == 0.0001 + 0.00010001 + 2.5 + 7.0


def test_per_request_counters_lose_nothing_across_threads() -> None:
    metrics = Metrics()
    per_thread, threads = 20_000, 8

    def count() -> None:
        for _ in range(per_thread):
            metrics.request("wsgi", "granted", 0.0003)
            metrics.cache_lookup("session", "hit")

    workers = [threading.Thread(target=count) for _ in range(threads)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    total = per_thread * threads
    assert metrics.value("paywall_requests_total", {"mode": "wsgi", "outcome": "granted"}) == total
    assert metrics.value("paywall_decision_seconds_count") == total
    assert metrics.value("paywall_decision_seconds_bucket", {"le": "0.0005"}) == total
    lookups = {"cache": "session", "tier": "l1", "result": "hit"}
    assert metrics.value("paywall_cache_lookups_total", lookups) == total


def test_scrapes_while_threads_count_see_monotonic_totals_and_the_exact_end() -> None:
    """Each thread counts in its own numbers; a scrape meanwhile adds them up without an error
    and never sees a total go back; threads that end (their ids reused by later ones) keep
    what they counted."""
    metrics = Metrics()
    per_thread, rounds, threads = 5_000, 3, 4

    def count() -> None:
        for _ in range(per_thread):
            metrics.request("wsgi", "granted", 0.0003)
            metrics.cache_lookup("access", "hit", "l2")

    seen: list[float] = []
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(rounds):  # one after the other: later threads may get earlier ids
            workers = [threading.Thread(target=count) for _ in range(threads)]
            for worker in workers:
                worker.start()
            while any(worker.is_alive() for worker in workers):
                seen.append(metrics.value("paywall_decision_seconds_count"))
            for worker in workers:
                worker.join()
    finally:
        sys.setswitchinterval(previous)
    assert seen == sorted(seen)
    total = per_thread * threads * rounds
    assert metrics.value("paywall_requests_total", {"mode": "wsgi", "outcome": "granted"}) == total
    assert metrics.value("paywall_decision_seconds_bucket", {"le": "0.0005"}) == total
    assert metrics.value("paywall_decision_seconds_sum") == pytest.approx(0.0003 * total)
    lookups = {"cache": "access", "tier": "l2", "result": "hit"}
    assert metrics.value("paywall_cache_lookups_total", lookups) == total
