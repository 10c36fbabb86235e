"""Invalidations reach other processes' L1 through Redis pub/sub, also after a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.service.bus import InvalidationBus
from gateway.service.cache import CacheEntry, MemoryCache
from gateway.service.codec import EntryCodec
from gateway.service.layered import LayeredCache
from gateway.service.redis_cache import RedisCache
from gateway.service.redis_guard import RedisGuard
from tests.service.conftest import ManualClock, PlainValues


class Process:
    """One gateway process's caches: its own L1, the shared Redis, its own bus listener."""

    def __init__(self, url: str, clock: ManualClock) -> None:
        self.client = redis.from_url(url)
        self.errors: list[str] = []
        self.guard = RedisGuard(timeout=1.0, on_error=self.errors.append)  # one per process
        self.bus = InvalidationBus(self.client, guard=self.guard, retry_delay=0.05)
        self.l1: MemoryCache[Any] = MemoryCache(1000, clock)
        self.bus.register(self.l1)
        l2: RedisCache[Any] = RedisCache(self.client, "access", EntryCodec(PlainValues()), clock)
        self.cache = LayeredCache(
            self.l1,
            l2,
            guard=self.guard,
            publish=self.bus.publish,
        )
        self.task = asyncio.create_task(self.bus.run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.aclose()


StartProcess = Callable[[], Awaitable[Process]]


@pytest.fixture
async def start_process(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[StartProcess]:
    clock = ManualClock()
    started: list[Process] = []

    async def start() -> Process:
        process = Process(redis_url, clock)
        started.append(process)
        await asyncio.wait_for(process.bus.connected.wait(), 5)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.stop()


def entry(value: object) -> CacheEntry[object]:
    until = ManualClock().now + timedelta(seconds=60)
    return CacheEntry(value, until, until)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)


async def test_an_invalidation_reaches_the_other_process_l1_within_a_second(
    start_process: StartProcess,
) -> None:
    a, b = await start_process(), await start_process()
    await a.cache.set("c1:premium", entry("granted"), customer_id="c1")
    assert await b.cache.get("c1:premium", customer_id="c1") is not None  # now in b's L1
    await b.l1.set("c1:archive", entry("only in b's L1"), customer_id="c1")
    await a.cache.invalidate_customer("c1")

    async def gone_from_b() -> bool:
        return await b.l1.get("c1:archive", customer_id="c1") is None

    await eventually(gone_from_b, within=1.0)
    assert await b.cache.get("c1:premium", customer_id="c1") is None
    assert a.errors == b.errors == []


async def test_a_reconnected_listener_forgets_what_it_may_have_missed(
    start_process: StartProcess, redis_client: redis.Redis
) -> None:
    b = await start_process()
    await b.l1.set("c9:x", entry("stale after a missed message"), customer_id="c9")
    await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def cleared() -> bool:
        return await b.l1.get("c9:x", customer_id="c9") is None

    await eventually(cleared, within=2.0)
    await asyncio.wait_for(b.bus.connected.wait(), 2)
    assert "subscribe" in b.errors
