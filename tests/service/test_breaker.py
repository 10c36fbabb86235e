"""The platform circuit breaker: open after consecutive failures, fail fast, one trial call."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from gateway.access.breaker import BreakerOpen, CircuitBreaker
from gateway.errors import InvalidSession, PlatformUnavailable, RateLimited
from tests.service.conftest import ManualClock


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.failure: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> str:
        self.count += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return "ok"


def breaker(clock: ManualClock, failures: int = 3) -> CircuitBreaker:
    return CircuitBreaker("platform", failures, timedelta(seconds=10), clock)


async def fail(b: CircuitBreaker, calls: Calls, times: int) -> None:
    for _ in range(times):
        with pytest.raises(PlatformUnavailable):
            await b.call(calls)


async def test_opens_after_consecutive_failures_and_fails_fast(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = RateLimited("429")
    await fail(b, calls, 3)
    assert b.state == "open"
    with pytest.raises(BreakerOpen):
        await b.call(calls)
    assert calls.count == 3


async def test_success_resets_the_count(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 2)
    calls.failure = None
    assert await b.call(calls) == "ok"
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 2)
    assert b.state == "closed"


async def test_definite_answers_are_not_failures(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = InvalidSession("401")
    for _ in range(5):
        with pytest.raises(InvalidSession):
            await b.call(calls)
    assert b.state == "closed"


async def test_half_open_lets_one_trial_through(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 3)
    clock.advance(10)
    assert b.state == "half_open"
    calls.failure = None
    calls.gate.clear()
    trial = asyncio.ensure_future(b.call(calls))
    await asyncio.sleep(0)
    with pytest.raises(BreakerOpen):  # while the trial runs, others still fail fast
        await b.call(calls)
    calls.gate.set()
    assert await trial == "ok"
    assert b.state == "closed"


async def test_failed_trial_opens_again(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 3)
    clock.advance(10)
    await fail(b, calls, 1)
    assert b.state == "open"
    assert calls.count == 4


async def test_cancelled_trial_lets_the_next_one_in(clock: ManualClock) -> None:
    b, calls = breaker(clock), Calls()
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 3)
    clock.advance(10)
    calls.failure = None
    calls.gate.clear()
    trial = asyncio.ensure_future(b.call(calls))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    calls.gate.set()
    assert await b.call(calls) == "ok"


async def test_zero_disables(clock: ManualClock) -> None:
    b, calls = breaker(clock, failures=0), Calls()
    calls.failure = PlatformUnavailable("503")
    await fail(b, calls, 20)
    assert calls.count == 20
