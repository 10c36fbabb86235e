"""L1 + L2 beyond the contract: sharing between processes, and Redis failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.store.cache import CacheEntry
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_cache import RedisCache
from gateway.store.redis_guard import RedisGuard
from tests.conftest import free_port
from tests.service.conftest import ManualClock, PlainValues


def layered(
    client: redis.Redis, clock: ManualClock, errors: list[str], timeout: float = 0.5
) -> LayeredCache[Any]:
    l2: RedisCache[Any] = RedisCache(client, "access", EntryCodec(PlainValues()), clock)
    return LayeredCache(
        MemoryCache(1000, clock), l2, guard=RedisGuard(timeout=timeout, on_error=errors.append)
    )


def entry(clock: ManualClock, value: object) -> CacheEntry[object]:
    until = clock.now + timedelta(seconds=60)
    return CacheEntry(value, until, until)


async def test_an_answer_stored_by_one_process_serves_another(redis_client: redis.Redis) -> None:
    clock, errors = ManualClock(), []
    first, second = layered(redis_client, clock, errors), layered(redis_client, clock, errors)
    await first.set("c1:premium", entry(clock, "granted"), customer_id="c1")
    found = await second.get("c1:premium", customer_id="c1")
    assert found is not None
    assert (found.value, found.tier) == ("granted", "l2")
    await redis_client.flushdb()  # now only the second process's L1 has it
    again = await second.get("c1:premium", customer_id="c1")
    assert again is not None
    assert (again.value, again.tier) == ("granted", "l1")
    assert errors == []


async def test_invalidation_in_one_process_reaches_the_shared_tier(
    redis_client: redis.Redis,
) -> None:
    clock, errors = ManualClock(), []
    first, second = layered(redis_client, clock, errors), layered(redis_client, clock, errors)
    await first.set("c1:premium", entry(clock, "granted"), customer_id="c1")
    await first.invalidate_customer("c1")
    assert await first.get("c1:premium", customer_id="c1") is None
    assert await second.get("c1:premium", customer_id="c1") is None  # its L1 never had it


@pytest.fixture
async def dead_redis() -> AsyncIterator[redis.Redis]:
    """A client of a port where nothing listens."""
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_down_costs_nothing_but_a_count(dead_redis: redis.Redis) -> None:
    clock, errors = ManualClock(), []
    cache = layered(dead_redis, clock, errors)
    assert await cache.get("k") is None
    await cache.set("k", entry(clock, 1))
    found = await cache.get("k")  # from L1
    assert found is not None
    assert found.value == 1
    generation = await cache.generation("c1")
    await cache.set("c1:x", entry(clock, 2), customer_id="c1", generation=generation)
    assert await cache.get("c1:x", customer_id="c1") is not None
    # L1 hits never ask Redis; a write whose L2 generation was unknown is not attempted.
    assert errors == ["get", "set", "generation"]


async def test_invalidating_with_redis_down_says_so(dead_redis: redis.Redis) -> None:
    clock, errors = ManualClock(), []
    cache = layered(dead_redis, clock, errors)
    await cache.set("c1:x", entry(clock, 1), customer_id="c1")
    with pytest.raises((OSError, redis.RedisError)):  # type: ignore[arg-type]
        await cache.invalidate_customer("c1")
    assert await cache.get("c1:x", customer_id="c1") is None  # L1 is invalidated regardless


async def test_a_redis_that_hangs_is_bounded_by_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.from_url(f"redis://127.0.0.1:{port}/0")
    clock, errors = ManualClock(), []
    cache = layered(client, clock, errors, timeout=0.05)
    try:
        started = time.perf_counter()
        assert await cache.get("k") is None
        await cache.set("k", entry(clock, 1))
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0  # two timeouts of 0.05 s, with headroom for a loaded machine
        assert errors == ["get", "set"]
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
        await client.aclose()
