"""Cross-process coalescing: a cold spike spread over two gateway processes sharing one Redis
makes one session validation and one hasAccess call in all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.access import (
    AccessOutcome,
    AccessRequest,
    AccessService,
    Credentials,
    Verdict,
)
from gateway.access.build import build_access_service
from gateway.config import PlatformSettings, Settings
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.sandbox.app import SandboxOptions, create_app
from gateway.store.coalesce import Found, RedisCoalescer
from gateway.store.redis_guard import RedisGuard
from tests.conftest import free_port
from tests.service.conftest import ManualClock, platform_calls
from tests.service.test_access_service import API_TOKEN, ROUTES, SEED

ENDPOINTS = ("validate_session", "has_access")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def guard(errors: list[str]) -> RedisGuard:
    return RedisGuard(timeout=1.0, on_error=errors.append)


def calls(metrics: Metrics, endpoint: str) -> float:
    return platform_calls(metrics, [endpoint])


async def test_a_cold_spike_over_two_processes_makes_one_call_each(
    aiohttp_server: Any, http: aiohttp.ClientSession, redis_url: str, redis_client: redis.Redis
) -> None:
    clock = ManualClock()
    app = create_app(SEED, SandboxOptions(api_token=API_TOKEN, latency=0.5), clock=clock)
    platform: TestServer = await aiohttp_server(app)
    settings = Settings(
        routes=ROUTES,
        platform=PlatformSettings(
            base_url=str(platform.make_url("/api/v3.0")), api_token=API_TOKEN, max_retries=0
        ),
        cache={"redis_url": redis_url, "redis_timeout": 1.0},
    )
    processes: list[tuple[AccessService, Metrics, redis.Redis]] = []
    for _ in range(2):
        metrics = Metrics()
        client = redis.from_url(redis_url)
        platform_client = PlenigoClient(
            http, settings.platform, clock=clock, observer=metrics.observer
        )
        service = build_access_service(
            settings, platform_client, metrics, clock=clock, redis_client=client
        )
        processes.append((service, metrics, client))
    try:
        request = AccessRequest("GET", "/premium/a", Credentials(None, "demo-session-plain"))
        # 100 requests in one process standing in for two (a flight finishing with hundreds of
        # waiters holds the test's debug-mode loop too long); 1,000 over two real gateway
        # processes: tests/integration.
        tasks: list[asyncio.Task[AccessOutcome]] = []
        for batch in range(4):
            tasks += [
                asyncio.create_task(processes[i % 2][0].check(request))
                for i in range(batch * 25, batch * 25 + 25)
            ]
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*tasks)
        assert {o.verdict for o in outcomes} == {Verdict.GRANTED}
        for endpoint in ENDPOINTS:
            assert sum(calls(metrics, endpoint) for _, metrics, _ in processes) == 1, endpoint
    finally:
        for _, _, client in processes:
            await client.aclose()


async def test_a_holder_that_never_stores_does_not_stall_the_others(
    redis_client: redis.Redis,
) -> None:
    errors: list[str] = []
    first = RedisCoalescer(redis_client, lock_ttl=5, wait=0.1, guard=guard(errors))
    second = RedisCoalescer(redis_client, lock_ttl=5, wait=0.1, guard=guard(errors))
    holding = asyncio.Event()
    release = asyncio.Event()

    async def slow_fetch() -> str:
        holding.set()
        await release.wait()
        return "first"

    async def nothing_stored() -> Found[str] | None:
        return None

    async def own_fetch() -> str:
        return "second"

    holder = asyncio.create_task(first.run("k", slow_fetch, nothing_stored))
    await holding.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await second.run("k", own_fetch, nothing_stored) == "second"
    assert 0.1 <= loop.time() - started < 1.0  # waited its bounded while, then fetched
    release.set()
    assert await holder == "first"
    assert await redis_client.exists("pwg:v1:lock:k") == 0  # released
    assert errors == []


async def test_redis_down_means_fetch(redis_url: str) -> None:
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    errors: list[str] = []
    coalescer = RedisCoalescer(client, lock_ttl=5, wait=5, guard=guard(errors))

    async def fetch() -> str:
        return "fetched"

    async def stored() -> Found[str] | None:
        return None

    try:
        assert await coalescer.run("k", fetch, stored) == "fetched"
    finally:
        await client.aclose()
    assert errors == ["lock"]
