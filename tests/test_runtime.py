"""gateway.runtime: the resources every driver starts and stops."""

from __future__ import annotations

import asyncio

from gateway import runtime


async def test_a_listener_that_loses_a_cancellation_is_cancelled_again() -> None:
    """The invalidation bus's listener was seen once to read on after its cancellation
    (``paywall-gateway invalidate`` hung in CI). Stopping the Redis tier cancels it again until
    it ends, never waiting for it forever."""
    lost = 0

    async def listener() -> None:
        nonlocal lost
        for _ in range(16):  # ends by itself after 8 s, so that a failing test ends too
            try:
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                lost += 1
                if lost < 3:
                    continue  # taken for the read's own timeout
                raise

    task = asyncio.create_task(listener())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(runtime._cancelled(task))
    done, _ = await asyncio.wait({stopping}, timeout=5)  # returns either way
    assert stopping in done, "still waiting for a listener that lost its cancellation"
    assert task.cancelled()
    assert lost == 3


async def test_a_listener_that_ends_at_once_is_cancelled_once() -> None:
    ran = asyncio.Event()
    cancellations = 0

    async def listener() -> None:
        nonlocal cancellations
        ran.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancellations += 1
            raise

    task = asyncio.create_task(listener())
    await ran.wait()
    await runtime._cancelled(task)
    assert task.cancelled()
    assert cancellations == 1
