"""The test harness itself: the blocking guard catches a blocked loop, real servers start."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as redis

from tests.conftest import BLOCKING_THRESHOLD, LoopBlockGuard


async def test_guard_detects_a_blocked_event_loop(loop_block_guard: LoopBlockGuard) -> None:
    def block() -> None:
        time.sleep(BLOCKING_THRESHOLD * 1.5)  # what a synchronous call on the loop would do

    asyncio.get_running_loop().call_soon(block)
    await asyncio.sleep(BLOCKING_THRESHOLD * 2)
    assert len(loop_block_guard.blocked) == 1
    assert "took" in loop_block_guard.blocked[0]
    loop_block_guard.blocked.clear()  # detected as expected: do not fail this test


async def test_guard_ignores_cooperative_waiting(loop_block_guard: LoopBlockGuard) -> None:
    await asyncio.sleep(BLOCKING_THRESHOLD * 1.5)
    assert loop_block_guard.blocked == []


async def test_redis_server_fixture_answers(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("harness", "ok", ex=5)
        assert await client.get("harness") == b"ok"
    finally:
        await client.aclose()
