"""Invalidations reach other processes' L1 through Redis pub/sub, also after a reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from tests.service.conftest import ManualClock
from tests.service.processes import Process, entry, eventually

StartProcess = Callable[[], Awaitable[Process]]


@pytest.fixture
async def start_process(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[StartProcess]:
    clock = ManualClock()
    started: list[Process] = []

    async def start() -> Process:
        # A plain redis-py client: it reports a killed subscription as an error (the gateway's
        # own reconnects silently, which the bus hears through the connect hook).
        process = Process(redis_url, clock, client=redis.from_url(redis_url))
        started.append(process)
        await asyncio.wait_for(process.bus.connected.wait(), 5)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.stop()


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
