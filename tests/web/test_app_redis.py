"""The gateway with the shared Redis tier: two gateway processes, one Redis, one simulator."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.metrics import Metrics
from gateway.web.app import RUNTIME, create_app
from tests.conftest import free_port
from tests.service.processes import eventually
from tests.web.conftest import Stack, StartStack

PLAIN = {"Cookie": "paywall_session=demo-session-plain"}


async def _second_gateway(stack: Stack, aiohttp_server: Any) -> tuple[TestServer, Metrics]:
    metrics = Metrics()
    server = await aiohttp_server(create_app(stack.settings, metrics=metrics, clock=stack.clock))
    return server, metrics


async def test_a_second_gateway_is_answered_from_redis(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    # A generous timeout: this test is about sharing, not about slow Redis.
    stack = await start_stack(cache={"redis_url": redis_url, "redis_timeout": 1.0})
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    assert stack.platform_calls("validate_session") == 1
    assert stack.platform_calls("has_access") == 1
    other, other_metrics = await _second_gateway(stack, aiohttp_server)
    async with stack.http.get(other.make_url("/premium/story"), headers=PLAIN) as response:
        assert response.status == 200
    calls = sum(
        other_metrics.value("paywall_platform_requests_total", {"endpoint": e, "status": "200"})
        for e in ("validate_session", "has_access")
    )
    assert calls == 0  # session and access answer both came from Redis
    assert other.app[RUNTIME].readiness()[1]["redis"] == "ok"

    # An invalidation in the first gateway reaches the second's L1 (pub/sub): its next answer
    # asks the platform again (polled, not a fixed pause, for a loaded machine).
    await stack.gateway.app[RUNTIME].service.invalidate_customer("100001", "admin")

    def asked() -> float:
        labels = {"endpoint": "has_access", "status": "200"}
        return other_metrics.value("paywall_platform_requests_total", labels)

    async def asked_again() -> bool:
        async with stack.http.get(other.make_url("/premium/story"), headers=PLAIN) as response:
            assert response.status == 200
        return asked() > 0

    await eventually(asked_again, within=2.0)
    assert asked() == 1


async def test_redis_down_changes_nothing_for_visitors(start_stack: StartStack) -> None:
    stack = await start_stack(cache={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    for _ in range(3):
        response = await stack.get("/premium/story", headers=PLAIN)
        assert response.status == 200
    assert stack.platform_calls("has_access") == 1  # L1 still works
    assert stack.metrics.value("paywall_redis_errors_total", {"operation": "get"}) >= 1
    ready, details = stack.gateway.app[RUNTIME].readiness()
    assert ready
    assert details["redis"] in ("degraded", "open")  # "open" once the Redis breaker trips
    assert stack.content_requests[-1]["headers"]["X-Paywall-Customer-Id"] == "100001"
