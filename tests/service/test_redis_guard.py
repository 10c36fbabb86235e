"""The Redis guard's breaker, driven by a hand-moved monotonic clock and fake Redis calls (and
the coalescer, on the test Redis, giving up its wait once the breaker opens)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.store.coalesce import Found, RedisCoalescer
from gateway.store.redis_guard import RedisGuard


@dataclass
class Seconds:
    """A monotonic clock that moves only when told."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRedis:
    """Counts the operations that really reached "Redis"; fails while ``down``."""

    down: bool = False
    reached: int = 0
    errors: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)

    async def op(self, value: str = "v") -> str:
        self.reached += 1
        if self.down:
            raise RedisConnectionError("connection refused")
        return value


def make(failures: int = 3, open_seconds: float = 5.0) -> tuple[RedisGuard, FakeRedis, Seconds]:
    redis, clock = FakeRedis(), Seconds()
    guard = RedisGuard(
        timeout=0.5,
        on_error=redis.errors.append,
        on_skip=redis.skips.append,
        failures=failures,
        open_seconds=open_seconds,
        clock=clock,
    )
    return guard, redis, clock


async def fail(guard: RedisGuard, redis: FakeRedis, times: int) -> None:
    redis.down = True
    for _ in range(times):
        assert await guard.call("get", redis.op()) == (False, None)


async def test_it_opens_after_n_failures_in_a_row_and_then_skips_redis() -> None:
    guard, redis, _ = make(failures=3)
    await fail(guard, redis, 2)
    assert guard.state == "degraded"
    assert not guard.is_open
    await fail(guard, redis, 1)
    assert guard.state == "open"
    assert redis.reached == 3
    redis.down = False  # even a Redis that is back is not asked while open
    for _ in range(10):
        assert await guard.call("get", redis.op()) == (False, None)
    assert redis.reached == 3
    assert guard.skipped == 10
    # The error metric counts the real failures only; skips have a metric of their own.
    assert redis.errors == ["get", "get", "get"]
    assert redis.skips == ["get"] * 10


async def test_a_success_in_between_resets_the_count() -> None:
    guard, redis, _ = make(failures=3)
    await fail(guard, redis, 2)
    redis.down = False
    assert await guard.call("get", redis.op("x")) == (True, "x")
    await fail(guard, redis, 2)
    assert guard.state == "degraded"  # 2 in a row, not 4
    await fail(guard, redis, 1)
    assert guard.state == "open"


async def test_a_skipped_call_is_closed_never_run_and_never_warns() -> None:
    guard, redis, _ = make(failures=1)
    await fail(guard, redis, 1)
    skipped = redis.op()
    assert await guard.call("get", skipped) == (False, None)
    # Closed: it never runs, and garbage collection has no "never awaited" to warn about.
    assert inspect.getcoroutinestate(skipped) == inspect.CORO_CLOSED
    assert redis.reached == 1
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    assert await guard.call("get", future) == (False, None)
    assert future.cancelled()


async def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    guard, redis, clock = make(failures=2, open_seconds=5.0)
    await fail(guard, redis, 2)
    clock.now += 4.9
    assert guard.state == "open"
    clock.now += 0.2  # the open time is over: half-open
    assert guard.state == "degraded"
    assert not guard.is_open
    redis.down = False
    release = asyncio.Event()

    async def slow_trial() -> str:
        redis.reached += 1
        await release.wait()
        return "trial"

    trial = asyncio.create_task(guard.call("get", slow_trial()))
    await asyncio.sleep(0)
    assert guard.state == "open"  # while the trial runs, the others are still skipped
    assert await guard.call("set", redis.op()) == (False, None)
    release.set()
    assert await trial == (True, "trial")
    assert guard.state == "degraded"  # closed; the last failure is recent
    assert await guard.call("get", redis.op("y")) == (True, "y")
    clock.now += RedisGuard.DEGRADED_FOR
    assert guard.state == "ok"


async def test_a_failed_trial_opens_it_again() -> None:
    guard, redis, clock = make(failures=2, open_seconds=5.0)
    await fail(guard, redis, 2)
    clock.now += 5.0
    reached = redis.reached
    assert await guard.call("get", redis.op()) == (False, None)  # the trial, still down
    assert redis.reached == reached + 1
    assert guard.state == "open"
    clock.now += 4.9
    assert await guard.call("get", redis.op()) == (False, None)
    assert redis.reached == reached + 1  # skipped: open for another open_seconds
    clock.now += 0.1
    redis.down = False
    assert await guard.call("get", redis.op("z")) == (True, "z")
    assert guard.state == "degraded"


async def test_a_cancelled_trial_leaves_the_next_call_to_try() -> None:
    guard, redis, clock = make(failures=1)
    await fail(guard, redis, 1)
    clock.now += 5.0
    never = asyncio.Event()
    trial = asyncio.create_task(guard.call("get", never.wait()))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    redis.down = False
    assert await guard.call("get", redis.op("next")) == (True, "next")


async def test_late_answers_of_calls_started_before_it_opened_do_not_close_it() -> None:
    guard, redis, _ = make(failures=2)
    release = asyncio.Event()

    async def slow_success() -> str:
        await release.wait()
        return "late"

    early = asyncio.create_task(guard.call("get", slow_success()))
    await asyncio.sleep(0)
    await fail(guard, redis, 2)
    assert guard.state == "open"
    release.set()
    assert await early == (True, "late")
    assert guard.state == "open"


async def test_failures_the_caller_catches_count_too() -> None:
    guard, redis, _ = make(failures=2)
    guard.failed("invalidate", RedisConnectionError("down"))
    guard.failed("subscribe", OSError("reset"))
    assert guard.state == "open"
    assert redis.errors == ["invalidate", "subscribe"]


async def test_a_timeout_is_a_failure() -> None:
    errors: list[str] = []
    guard = RedisGuard(timeout=0.01, on_error=errors.append, failures=1, clock=Seconds())
    assert await guard.call("get", asyncio.Event().wait()) == (False, None)
    assert errors == ["get"]
    assert guard.state == "open"


@pytest.mark.parametrize(
    ("error", "absorbed"),
    [
        pytest.param(RedisConnectionError("refused"), True, id="redis-error"),
        pytest.param(ConnectionResetError("reset"), True, id="os-error"),
        pytest.param(ValueError("a bug"), False, id="bug-propagates"),
    ],
)
async def test_what_counts_as_a_redis_failure(error: Exception, absorbed: bool) -> None:
    guard, redis, _ = make()

    async def raising() -> Any:
        raise error

    call: Awaitable[Any] = raising()
    if absorbed:
        assert await guard.call("get", call) == (False, None)
        assert redis.errors == ["get"]
    else:
        with pytest.raises(type(error)):
            await guard.call("get", call)
        assert redis.errors == []


async def test_zero_failures_never_opens() -> None:
    guard, redis, _ = make(failures=0)
    await fail(guard, redis, 50)
    assert guard.state == "degraded"
    assert redis.reached == 50
    assert guard.skipped == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failures"):
        RedisGuard(timeout=1, on_error=print, failures=-1)
    with pytest.raises(ValueError, match="open_seconds"):
        RedisGuard(timeout=1, on_error=print, open_seconds=0)


async def test_a_coalescer_stops_waiting_for_another_process_once_the_breaker_opens(
    redis_client: aioredis.Redis,
) -> None:
    holder_guard, waiter_guard = make(failures=2)[0], make(failures=2)[0]
    holder = RedisCoalescer(redis_client, lock_ttl=5, wait=5, guard=holder_guard)
    waiter = RedisCoalescer(redis_client, lock_ttl=5, wait=5, guard=waiter_guard)
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_fetch() -> str:
        holding.set()
        await release.wait()
        return "holder"

    async def own_fetch() -> str:
        return "waiter"

    async def nothing_yet() -> Found[str] | None:
        return None

    holding_task = asyncio.create_task(holder.run("k", slow_fetch, nothing_yet))
    await holding.wait()
    waiting = asyncio.create_task(waiter.run("k", own_fetch, nothing_yet))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # polling for the holder's answer
    for _ in range(2):
        waiter_guard.failed("get", RedisConnectionError("down"))
    assert await asyncio.wait_for(waiting, 2.0) == "waiter"  # not after wait=5 s
    release.set()
    assert await holding_task == "holder"
