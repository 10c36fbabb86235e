"""Shared pieces of the service tests: a hand-moved clock, the cache tiers under contract, and
the platform calls a service made."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.metrics import Metrics
from gateway.store.cache import MemoryCache, PayloadCache
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.redis_cache import RedisCache
from gateway.store.redis_guard import RedisGuard

# Wednesday 2025-06-11, 12:00 in Berlin (as in tests/platform): inside the 06-18 window.
T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)

PLATFORM_ENDPOINTS = ("validate_session", "transfer_token", "has_access")
ANSWERED = ("200", "401", "404", "500")


def platform_calls(
    metrics: Metrics,
    endpoints: Iterable[str] = PLATFORM_ENDPOINTS,
    statuses: Iterable[str] = ANSWERED,
) -> float:
    """HTTP attempts the gateway made to the platform's ``endpoints`` that were answered with
    one of ``statuses``."""
    statuses = tuple(statuses)
    return sum(
        metrics.value("paywall_platform_requests_total", {"endpoint": endpoint, "status": status})
        for endpoint in endpoints
        for status in statuses
    )


@dataclass
class ManualClock:
    """An aware UTC clock that moves only when told; shared by the gateway and the simulator."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


CacheFactory = Callable[[int, ManualClock], PayloadCache[Any]]


def _memory(max_entries: int, clock: ManualClock) -> PayloadCache[Any]:
    return MemoryCache(max_entries, clock)


class PlainValues:
    """Values that are JSON as they are (what the contract suite stores)."""

    def dump(self, value: Any) -> Any:
        return value

    def load(self, data: Any) -> Any:
        return data


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    """A client of the test session's redis-server, on an emptied database."""
    client = redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


# Every tier joins this list; the contract suite runs against each.
CACHE_TIERS = [
    pytest.param("l1", id="l1"),
    pytest.param("l2", id="l2-redis"),
    pytest.param("layered", id="l1+l2"),
]


@pytest.fixture(params=CACHE_TIERS)
def cache_factory(request: pytest.FixtureRequest) -> CacheFactory:
    if request.param == "l1":
        return _memory
    client: redis.Redis = request.getfixturevalue("redis_client")

    def _redis(max_entries: int, clock: ManualClock) -> PayloadCache[Any]:
        return RedisCache(client, "contract", EntryCodec(PlainValues()), clock)

    def _layered(max_entries: int, clock: ManualClock) -> PayloadCache[Any]:
        l2: RedisCache[Any] = RedisCache(client, "contract", EntryCodec(PlainValues()), clock)
        return LayeredCache(
            MemoryCache(max_entries, clock), l2, guard=RedisGuard(timeout=1.0, on_error=_raise)
        )

    return _redis if request.param == "l2" else _layered


def _raise(operation: str) -> None:
    raise AssertionError(f"redis {operation} failed in a test where Redis is up")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
