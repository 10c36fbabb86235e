"""Single-flight: one execution per key in flight, shared results, errors and cancellations."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import PlatformUnavailable
from gateway.store.singleflight import SingleFlight


class Work:
    """A call that blocks until released, counting how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return "result"


async def test_concurrent_calls_share_one_execution() -> None:
    coalesced: list[int] = []
    flight: SingleFlight[str, str] = SingleFlight(lambda: coalesced.append(1))
    work = Work()
    waiters = [asyncio.ensure_future(flight.run("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    work.release.set()
    assert await asyncio.gather(*waiters) == ["result"] * 50
    assert work.calls == 1
    assert len(coalesced) == 49
    assert len(flight) == 0  # forgotten once done: the next call runs again
    assert await flight.run("k", work) == "result"
    assert work.calls == 2


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.release.set()
    await asyncio.gather(flight.run("a", work), flight.run("b", work))
    assert work.calls == 2


async def test_exception_reaches_every_waiter() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.error = PlatformUnavailable("down")
    waiters = [asyncio.ensure_future(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    work.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, PlatformUnavailable) for r in results)
    assert work.calls == 1


async def test_cancelled_waiter_does_not_cancel_the_shared_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    first = asyncio.ensure_future(flight.run("k", work))
    second = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()  # the caller that started the call goes away
    with pytest.raises(asyncio.CancelledError):
        await first
    work.release.set()
    assert await second == "result"
    assert work.calls == 1


async def test_all_waiters_cancelled_the_call_still_finishes_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.error = PlatformUnavailable("down")
    waiter = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    work.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(flight) == 0
    assert "never retrieved" not in caplog.text
