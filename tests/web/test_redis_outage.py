"""Redis failing under a running gateway: hanging, then dead, then back.

A private redis-server is paused (SIGSTOP: connections are accepted, nothing answers, every
operation runs into ``redis_timeout``), killed, and started again on the same port. Visitors
get the same answers throughout (200 / 403 from L1 and the platform); ``/readyz`` stays 200
and shows Redis "open" while the breaker skips it; once it is open, requests stop paying for
Redis timeouts; after ``redis_breaker_open_seconds`` a trial finds Redis back and closes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestServer

from gateway.web.admin import create_admin_app
from tests.conftest import free_port
from tests.service.test_redis_connect import RedisServer, pings, start_redis
from tests.web.conftest import Stack, StartStack

# Whole seconds, for a loaded machine: an answer that skips Redis has 0.6 s (TIMEOUT * 0.6), and
# the four requests made while the breaker is open have OPEN_SECONDS before a trial could run.
TIMEOUT = 1.0  # redis_timeout: long enough to tell a request that waited for Redis
FAILURES = 3
OPEN_SECONDS = 2.0

PLAIN = {"Cookie": "paywall_session=demo-session-plain"}  # premium and archive
NO_RIGHTS = {"Cookie": "paywall_session=demo-session-no-rights"}
BLOCKED = {"Cookie": "paywall_session=demo-session-blocked-item"}
RENEWED = {"Cookie": "paywall_session=demo-session-renewed"}  # premium
PAUSED = {"Cookie": "paywall_session=demo-session-paused"}
READY = {"config": "loaded", "platform": "closed", "status": "ready"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    port = free_port()
    server = start_redis(tmp_path / "redis", {"port": port}, pings(port=port), port=port)
    try:
        yield server
    finally:
        server.stop()


async def timed(stack: Stack, path: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    response = await stack.get(path, headers=headers)
    return response.status, time.perf_counter() - started


async def readyz(stack: Stack, admin: TestServer) -> tuple[int, dict[str, Any]]:
    async with stack.http.get(admin.make_url("/readyz")) as response:
        return response.status, await response.json()


def redis_errors(stack: Stack) -> float:
    return sum(
        stack.metrics.value("paywall_redis_errors_total", {"operation": operation})
        for operation in ("get", "set", "generation", "lock", "unlock", "subscribe")
    )


async def test_visitors_never_notice_redis_hanging_dying_and_coming_back(
    start_stack: StartStack,
    aiohttp_server: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    port = redis_server.port
    stack = await start_stack(
        cache={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "redis_timeout": TIMEOUT,
            "redis_breaker_failures": FAILURES,
            "redis_breaker_open_seconds": OPEN_SECONDS,
        }
    )
    admin = await aiohttp_server(create_admin_app(stack.gateway.app))

    # Redis up.
    assert (await timed(stack, "/premium/story", PLAIN))[0] == 200
    assert await readyz(stack, admin) == (200, {**READY, "redis": "ok"})

    # Redis hangs: the first operations wait for their timeout, then the breaker opens.
    redis_server.pause()
    status, took = await timed(stack, "/premium/story", NO_RIGHTS)
    assert status == 403
    assert took >= TIMEOUT  # it did wait for Redis...
    assert redis_errors(stack) >= FAILURES
    status, details = await readyz(stack, admin)
    assert (status, details["redis"], details["status"]) == (200, "open", "ready")

    # ...and from now on nobody does: every request misses L1 and is answered at once.
    counted = redis_errors(stack)
    for path, headers, expected in [
        ("/archive/2024", PLAIN, 200),
        ("/premium/story", BLOCKED, 403),
        ("/premium/story", RENEWED, 200),
        ("/premium/other", NO_RIGHTS, 403),
    ]:
        status, took = await timed(stack, path, headers)
        assert status == expected, path
        assert took < TIMEOUT * 0.6, (path, took)
    assert redis_errors(stack) == counted  # skipped calls are not Redis errors

    # Redis dies: still the same answers.
    redis_server.kill()
    assert (await timed(stack, "/premium/story", PLAIN))[0] == 200
    assert (await timed(stack, "/premium/story", NO_RIGHTS))[0] == 403

    # Redis comes back on the same port; after the open time a trial closes the breaker.
    restarted = await asyncio.to_thread(
        start_redis, tmp_path / "redis-again", {"port": port}, pings(port=port), port=port
    )
    try:
        await asyncio.sleep(OPEN_SECONDS)
        status, took = await timed(stack, "/premium/story", PAUSED)
        assert status in (200, 403)
        assert took < TIMEOUT
        status, details = await readyz(stack, admin)
        assert (status, details["redis"]) == (200, "degraded")  # closed; failures are recent
        # The shared tier is used again: the answer just given is in the new Redis.
        keys = await asyncio.to_thread(_keys, port)
        assert any(key.startswith(b"pwg:v1:") for key in keys), keys
    finally:
        restarted.stop()


def _keys(port: int) -> list[bytes]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        return [key for key in client.keys("*") if isinstance(key, bytes)]
    finally:
        client.close()
