"""Shared pieces of the service tests: a hand-moved clock and the cache tiers under contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.service.cache import MemoryCache, PayloadCache

# Wednesday 2025-06-11, 12:00 in Berlin (as in tests/platform): inside the 06-18 window.
T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)


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


# Every tier joins this list; the contract suite runs against each.
CACHE_TIERS = [pytest.param(_memory, id="l1")]


@pytest.fixture(params=CACHE_TIERS)
def cache_factory(request: pytest.FixtureRequest) -> CacheFactory:
    factory: CacheFactory = request.param
    return factory


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
