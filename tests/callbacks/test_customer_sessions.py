"""Per-customer session invalidation: every cached session validation of a customer ends in
O(1), in L1 alone and across processes through Redis (gateway.store.cache, owner scopes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.access.codecs import CustomerIdCodec
from gateway.store.cache import CacheEntry, sessions_scope, token_key
from gateway.store.codec import EntryCodec
from gateway.store.memory import MemoryCache
from tests.service.conftest import ManualClock
from tests.service.processes import Process, eventually

StartProcess = Callable[[], Awaitable[Process]]


def session(customer_id: str | None, clock: ManualClock) -> CacheEntry[str | None]:
    """A session validation as IdentityResolver stores it: owned by its customer."""
    until = clock.now + timedelta(seconds=300)
    owner = None if customer_id is None else sessions_scope(customer_id)
    return CacheEntry(customer_id, until, until, owner=owner)


KEY_A1, KEY_A2, KEY_B = (token_key("session", t) for t in ("a-one", "a-two", "b-one"))


async def store(cache: Any, clock: ManualClock) -> None:
    for key, customer in ((KEY_A1, "100"), (KEY_A2, "100"), (KEY_B, "200")):
        await cache.set(key, session(customer, clock), customer_id=key)


async def found(cache: Any, key: str) -> bool:
    return await cache.get(key, customer_id=key) is not None


async def test_l1_ends_every_session_of_one_customer_and_no_other() -> None:
    clock = ManualClock()
    cache: MemoryCache[str | None] = MemoryCache(1000, clock)
    await store(cache, clock)
    rejected = token_key("session", "rejected")
    await cache.set(rejected, session(None, clock), customer_id=rejected)

    await cache.invalidate_customer("100")  # the customer's *access* scope: no session ends
    assert await found(cache, KEY_A1)
    assert await found(cache, KEY_A2)

    await cache.invalidate_customer(sessions_scope("100"))
    assert not await found(cache, KEY_A1)
    assert not await found(cache, KEY_A2)
    assert cache.peek(KEY_A1, customer_id=KEY_A1) is None  # the synchronous path too
    assert await found(cache, KEY_B)
    assert await found(cache, rejected)  # a remembered rejection has no owner: stays

    # A validation after the invalidation is stored and found again.
    await cache.set(KEY_A1, session("100", clock), customer_id=KEY_A1)
    assert await found(cache, KEY_A1)


async def test_l1_forgetting_old_generation_records_never_revives_an_entry() -> None:
    clock = ManualClock()
    cache: MemoryCache[str | None] = MemoryCache(100, clock)
    await cache.set(KEY_A1, session("100", clock), customer_id=KEY_A1)
    await cache.invalidate_customer(sessions_scope("100"))
    # An invalidation storm makes L1 forget records: the old entry must stay gone.
    for n in range(150):
        await cache.invalidate_customer(f"storm-{n}")
    assert not await found(cache, KEY_A1)


def test_the_codec_keeps_the_owner_and_its_generation() -> None:
    clock = ManualClock()
    codec = EntryCodec(CustomerIdCodec())
    entry = session("100", clock)
    decoded, generation = codec.decode_owned(codec.encode(entry, 7))
    assert decoded == entry
    assert decoded.owner == sessions_scope("100")
    assert generation == 7
    plain = CacheEntry("100", entry.fresh_until, entry.stale_until)
    assert codec.decode_owned(codec.encode(plain)) == (plain, 0)


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


async def test_redis_ends_a_customers_sessions_in_every_process(
    start_process: StartProcess,
) -> None:
    clock = ManualClock()
    a, b = await start_process(), await start_process()
    await store(a.cache, clock)
    for key in (KEY_A1, KEY_A2, KEY_B):
        assert await found(b.cache, key)  # L2 hits, now in b's L1 as well
        assert await found(b.l1, key)

    await a.cache.invalidate_customer(sessions_scope("100"))

    async def gone_from_b_l1() -> bool:
        return not await found(b.l1, KEY_A1) and not await found(b.l1, KEY_A2)

    await eventually(gone_from_b_l1, within=1.0)  # through the bus
    assert not await found(b.cache, KEY_A1)  # and the shared tier agrees
    c = await start_process()  # a process that never held them: L2 alone decides
    assert not await found(c.cache, KEY_A1)
    assert not await found(c.cache, KEY_A2)
    for process in (a, b, c):
        assert await found(process.cache, KEY_B)
    assert a.errors == b.errors == c.errors == []


async def test_redis_a_validation_stored_after_the_invalidation_counts(
    start_process: StartProcess,
) -> None:
    clock = ManualClock()
    a = await start_process()
    await a.cache.invalidate_customer(sessions_scope("100"))
    await a.cache.set(KEY_A1, session("100", clock), customer_id=KEY_A1)
    b = await start_process()
    assert await found(b.cache, KEY_A1)
