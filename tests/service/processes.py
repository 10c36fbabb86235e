"""A stand-in for one gateway process's Redis use, for tests that need two of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import redis.asyncio as redis

from gateway.store.bus import InvalidationBus
from gateway.store.cache import CacheEntry
from gateway.store.coalesce import RedisCoalescer
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_cache import RedisCache
from gateway.store.redis_connect import connect_redis
from gateway.store.redis_guard import RedisGuard
from tests.service.conftest import ManualClock, PlainValues


class Process:
    """One gateway process: its client and guard, its L1 in front of the shared tier, its bus
    listener and its coalescer. Redis failures go to ``errors`` (its own list by default)."""

    def __init__(
        self,
        url: str,
        clock: ManualClock,
        errors: list[str] | None = None,
        *,
        timeout: float = 1.0,
        client: redis.Redis | None = None,
    ) -> None:
        self.errors: list[str] = [] if errors is None else errors
        # The gateway's own client by default; a plain redis-py one where a test needs it.
        self.client = client if client is not None else connect_redis(url, connect_timeout=2.0)
        self.guard = RedisGuard(timeout=timeout, on_error=self.errors.append)
        self.bus = InvalidationBus(self.client, guard=self.guard, retry_delay=0.05)
        self.l1: MemoryCache[Any] = MemoryCache(1000, clock)
        self.bus.register(self.l1)
        l2: RedisCache[Any] = RedisCache(self.client, "access", EntryCodec(PlainValues()), clock)
        self.bus.register(l2.epoch)
        self.cache = LayeredCache(self.l1, l2, guard=self.guard, publish=self.bus.publish)
        self.coalescer = RedisCoalescer(self.client, lock_ttl=5, wait=5, guard=self.guard)
        self.task = asyncio.create_task(self.bus.run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.aclose()


def entry(value: object) -> CacheEntry[object]:
    until = ManualClock().now + timedelta(seconds=60)
    return CacheEntry(value, until, until)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)
