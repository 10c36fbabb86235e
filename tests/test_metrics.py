"""Metrics: private registries, the platform observer, and the per-request helpers."""

from __future__ import annotations

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
