"""Shared pieces of the service tests: a hand-moved clock, the cache tiers under contract, and
the platform calls a service made."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as redis

from gateway.access import (
    AccessOutcome,
    AccessRequest,
    AccessService,
    Credentials,
    build_access_service,
)
from gateway.access.build import build_redis_guard
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.sandbox.app import SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from gateway.store.cache import PayloadCache
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_cache import RedisCache
from gateway.store.redis_guard import RedisGuard
from tests.conftest import REPO_ROOT

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


# --- an access service as build_access_service wires it, against the simulator -----------

API_TOKEN = "sandbox-api-token"
SEED = load_data(REPO_ROOT / "gateway" / "resources" / "sandbox-data.json", T0)
PLAIN, NO_RIGHTS = "demo-session-plain", "demo-session-no-rights"
ROUTES = [{"path": "/premium/**", "access_rights": ["premium"]}]


@dataclass
class Service:
    service: AccessService
    metrics: Metrics
    guard: RedisGuard  # the process's Redis guard (its breaker), as build_access_service uses it

    def lookups(self) -> dict[tuple[str, str, str], float]:
        """The cache-lookup samples that are not zero: (cache, tier, result) -> count."""
        samples = {
            (cache, tier, result): self.metrics.value(
                "paywall_cache_lookups_total", {"cache": cache, "tier": tier, "result": result}
            )
            for cache in ("session", "access")
            for tier in ("l1", "l2")
            for result in ("hit", "miss", "stale")
        }
        return {k: v for k, v in samples.items() if v}

    def redis_failures(self) -> dict[str, float]:
        """The Redis errors and breaker skips counted, every operation: name -> count."""
        names = ("paywall_redis_errors_total", "paywall_redis_skipped_total")
        return {
            f"{sample.name}{sample.labels}": sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name in names and sample.value
        }

    async def forget_l1(self) -> None:
        """Empty the service's L1 caches only (as LRU eviction would)."""
        sessions = cast(LayeredCache[Any], self.service._identity._cache)
        access = cast(LayeredCache[Any], self.service._cache)
        await sessions._l1.invalidate_all()
        await access._l1.invalidate_all()

    def platform_calls(self) -> float:
        return platform_calls(self.metrics)

    async def check(self, session: str) -> AccessOutcome:
        request = AccessRequest("GET", "/premium/a", Credentials(session_token=session))
        return await self.service.check(request)


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(
    aiohttp_server: Any, redis_client: redis.Redis
) -> AsyncIterator[StartService]:
    """``await start_service(**cache)``: an access service against the simulator, sharing the
    test's Redis (or using the client ``redis_with=``), wired by build_access_service; all of
    them on one manual clock."""
    clock = ManualClock()
    sandbox = create_sandbox(SEED, SandboxOptions(api_token=API_TOKEN), clock=clock)
    server = await aiohttp_server(sandbox)
    services: list[AccessService] = []
    async with aiohttp.ClientSession() as http:

        async def start(*, redis_with: redis.Redis | None = None, **cache: Any) -> Service:
            platform = {"base_url": str(server.make_url("/api/v3.0")), "api_token": API_TOKEN}
            settings = Settings(
                routes=ROUTES,
                platform={**platform, "max_retries": 0},
                cache={"redis_url": "redis://unused", **cache},
            )
            metrics = Metrics()
            client = PlenigoClient(http, settings.platform, clock=clock, observer=metrics.observer)
            guard = build_redis_guard(settings, metrics)  # what build_access_service makes
            service = build_access_service(
                settings,
                client,
                metrics,
                clock=clock,
                redis_client=redis_client if redis_with is None else redis_with,
                redis_guard=guard,
            )
            services.append(service)
            return Service(service, metrics, guard)

        try:
            yield start
        finally:
            for service in services:
                await service.close()


class CheckTasks:
    """Counts the tasks AccessService.check_soon starts to run ``check`` (its fall-backs): a
    request its lane answers starts none. A task factory on the running loop, so it counts
    the same on the compiled build (whose service cannot be patched) as on the pure one."""

    def __init__(self) -> None:
        self.calls = 0
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()

        def factory(
            loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
        ) -> asyncio.Future[Any]:
            name = getattr(coro, "__qualname__", None) or type(coro).__name__
            if "_checked" in name:  # AccessService._checked: check, and the caller's answer
                self.calls += 1
            if previous is not None:
                return previous(loop, coro, **kwargs)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
