"""The invalidation API (customer, session, everything) across two gateways sharing one Redis."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.metrics import Metrics
from gateway.web.app import RUNTIME
from tests.web.conftest import Stack, StartStack
from tests.web.test_app_redis import PLAIN, _second_gateway

TOKEN_HASH = hashlib.sha256(b"demo-session-plain").hexdigest()


def _calls(metrics: Metrics, endpoint: str) -> float:
    labels = {"endpoint": endpoint, "status": "200"}
    return metrics.value("paywall_platform_requests_total", labels)


def _lookups(metrics: Metrics, cache: str, tier: str, result: str) -> float:
    labels = {"cache": cache, "tier": tier, "result": result}
    return metrics.value("paywall_cache_lookups_total", labels)


async def _two_gateways(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> tuple[Stack, TestServer, Metrics]:
    client = redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    stack = await start_stack(cache={"redis_url": redis_url, "redis_timeout": 1.0})
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    other, metrics = await _second_gateway(stack, aiohttp_server)
    async with stack.http.get(other.make_url("/premium/story"), headers=PLAIN) as response:
        assert response.status == 200
    return stack, other, metrics


async def _until_asked(stack: Stack, other: TestServer, metrics: Metrics, endpoint: str) -> None:
    """Request from the second gateway until it asks the platform (its L1 was dropped): within
    one second of the invalidation, or the test fails."""
    before = _calls(metrics, endpoint)
    for _ in range(20):
        async with stack.http.get(other.make_url("/premium/story"), headers=PLAIN) as response:
            assert response.status == 200
        if _calls(metrics, endpoint) > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the second gateway still answers {endpoint} from its memory")


async def test_the_second_gateway_is_answered_by_redis_and_the_metric_says_so(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    for cache in ("session", "access"):
        assert _lookups(stack.metrics, cache, "l2", "miss") == 1
        assert _lookups(metrics, cache, "l2", "hit") == 1
        assert _lookups(metrics, cache, "l1", "hit") == 0
    async with stack.http.get(other.make_url("/premium/story"), headers=PLAIN) as response:
        assert response.status == 200
    for cache in ("session", "access"):
        assert _lookups(metrics, cache, "l1", "hit") == 1  # copied into its L1


async def test_invalidate_session_reaches_every_gateway(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    assert _calls(metrics, "validate_session") == 0
    await stack.gateway.app[RUNTIME].service.invalidate_session(TOKEN_HASH, "admin")
    await _until_asked(stack, other, metrics, "validate_session")
    assert _calls(metrics, "has_access") == 0  # the customer's access answers are untouched
    assert stack.metrics.value("paywall_invalidations_total", {"source": "admin"}) == 1


async def test_invalidate_all_reaches_every_gateway(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    await stack.gateway.app[RUNTIME].service.invalidate_all("admin")
    await _until_asked(stack, other, metrics, "has_access")
    assert _calls(metrics, "validate_session") == 1
    # The first gateway finds what the second just stored under the new epoch.
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    assert stack.platform_calls("has_access") == 1
    assert _lookups(stack.metrics, "access", "l2", "hit") == 1
