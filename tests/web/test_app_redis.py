"""The gateway with the shared Redis tier: two gateway processes, one Redis, one simulator."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.metrics import Metrics
from gateway.web.app import RUNTIME, create_app
from tests.conftest import free_port
from tests.service.conftest import CheckTasks
from tests.service.processes import eventually
from tests.web.conftest import GatewayTestServer, Stack, StartStack

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


async def test_the_auth_endpoint_answers_an_l2_only_hit_as_it_answers_a_platform_call(
    start_stack: StartStack, redis_url: str
) -> None:
    """auth_request mode, served as ``paywall-gateway serve`` serves it: a second gateway whose
    memory holds nothing answers from Redis alone, with no task per request (the access
    service's lane: no task runs its ``check``), with the status and headers the first
    gateway answers from its own memory, and counts an L2 hit of each cache."""
    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    sections: dict[str, Any] = {
        "server": {"mode": "auth_request"},
        "cache": {"redis_url": redis_url, "redis_timeout": 1.0},
    }
    first = await start_stack(**sections)
    sessions = ["demo-session-plain", "demo-session-no-rights"]

    async def answers(gateway: TestServer) -> list[tuple[int, dict[str, str]]]:
        found = []
        for session in sessions:
            headers = {
                "Cookie": f"paywall_session={session}",
                "X-Original-URI": "/premium/story",
            }
            url = gateway.make_url("/_paywall/auth")
            async with first.http.get(url, headers=headers) as response:
                await response.read()
                kept = {k: v for k, v in response.headers.items() if k.lower() != "date"}
                found.append((response.status, kept))
        return found

    await answers(first.gateway)  # the platform answers; stored in Redis
    expected = await answers(first.gateway)  # from the first gateway's memory: hits
    assert [(status, h["X-Paywall-Cache"]) for status, h in expected] == [
        (200, "hit"),
        (403, "hit"),
    ]
    second = GatewayTestServer(
        create_app(first.settings, metrics=(metrics := Metrics()), clock=first.clock)
    )
    await second.start_server()
    try:
        service = second.app[RUNTIME].service
        await service._cache._l2.epoch.current()  # read once per process: not the lane's
        checks = CheckTasks()
        assert await answers(second) == expected
        assert checks.calls == 0  # the lane answered both
        for cache in ("session", "access"):
            labels = {"cache": cache, "tier": "l2", "result": "hit"}
            assert metrics.value("paywall_cache_lookups_total", labels) == 2
        calls = sum(
            metrics.value("paywall_platform_requests_total", {"endpoint": e, "status": "200"})
            for e in ("validate_session", "has_access")
        )
        assert calls == 0
    finally:
        await second.close()
