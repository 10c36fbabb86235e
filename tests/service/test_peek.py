"""AccessService.peek: the synchronous, any-thread part of check (the WSGI middleware's fast
path). It answers exactly what check would answer, counts what check would count, and says
"cannot tell" (None) whenever check would need the platform, Redis or the refresh machinery."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.access import (
    AccessOutcome,
    AccessRequest,
    AccessService,
    Credentials,
    Verdict,
    build_access_service,
)
from gateway.access.service import NO_CREDENTIAL_OUTCOME, PUBLIC_OUTCOME, ROUTE_DENIED_OUTCOME
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.sandbox.app import SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from gateway.store.cache import CacheEntry
from gateway.store.memory import MemoryCache
from tests.conftest import REPO_ROOT
from tests.service.conftest import T0, ManualClock, platform_calls

API_TOKEN = "sandbox-api-token"
SEED = load_data(REPO_ROOT / "gateway" / "resources" / "sandbox-data.json", T0)
PLAIN, NO_RIGHTS = "demo-session-plain", "demo-session-no-rights"
ROUTES = [
    {"path": "/free/**", "public": True},
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/both/**", "access_rights": ["premium", "archive"], "require": "all"},
]
T = TypeVar("T")


@dataclass
class Setup:
    service: AccessService
    metrics: Metrics
    clock: ManualClock

    def calls(self) -> float:
        return platform_calls(self.metrics)

    def lookups(self) -> dict[tuple[str, str, str], float]:
        """Every cache-lookup sample: (cache, tier, result) -> count."""
        return {
            (cache, tier, result): self.metrics.value(
                "paywall_cache_lookups_total", {"cache": cache, "tier": tier, "result": result}
            )
            for cache in ("session", "access")
            for tier in ("l1", "l2")
            for result in ("hit", "miss", "stale")
        }


Start = Callable[..., Awaitable[Setup]]


def request(path: str, session: str | None = None, transfer: str | None = None) -> AccessRequest:
    return AccessRequest("GET", path, Credentials(transfer, session))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start(aiohttp_server: Any, http: aiohttp.ClientSession) -> AsyncIterator[Start]:
    """``await start(cache={...}, redis_client=None)``: a service against the simulator."""
    services: list[AccessService] = []
    shared: dict[str, Any] = {}

    async def start(redis_client: redis.Redis | None = None, **sections: Any) -> Setup:
        if "server" not in shared:
            clock = ManualClock()
            sandbox = create_sandbox(SEED, SandboxOptions(api_token=API_TOKEN), clock=clock)
            shared["server"], shared["clock"] = await aiohttp_server(sandbox), clock
        server: TestServer = shared["server"]
        clock = shared["clock"]
        platform = {"base_url": str(server.make_url("/api/v3.0")), "api_token": API_TOKEN}
        settings = Settings(routes=ROUTES, platform={**platform, "max_retries": 0}, **sections)
        metrics = Metrics()
        client = PlenigoClient(http, settings.platform, clock=clock, observer=metrics.observer)
        service = build_access_service(
            settings, client, metrics, clock=clock, redis_client=redis_client
        )
        services.append(service)
        return Setup(service, metrics, clock)

    yield start
    for service in services:
        await service.close()


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        pytest.param(request("/free/a", PLAIN), PUBLIC_OUTCOME, id="public"),
        pytest.param(request("/free/a", None, "tok"), None, id="public-with-transfer-token"),
        pytest.param(request("/other", PLAIN), ROUTE_DENIED_OUTCOME, id="no-route"),
        pytest.param(request("/premium/a"), NO_CREDENTIAL_OUTCOME, id="no-credential"),
        pytest.param(request("/premium/a", None, "tok"), None, id="transfer-token"),
        pytest.param(request("/premium/a", PLAIN), None, id="cold-session"),
    ],
)
async def test_what_needs_no_cache_or_cannot_be_told(
    start: Start, req: AccessRequest, expected: AccessOutcome | None
) -> None:
    setup = await start()
    before = setup.lookups()
    assert setup.service.peek(req) == expected
    assert setup.calls() == 0  # never I/O
    assert setup.lookups() == before  # None counts nothing: check will count the request


@pytest.mark.parametrize(
    ("path", "session", "verdict"),
    [
        pytest.param("/premium/a", PLAIN, Verdict.GRANTED, id="granted"),
        pytest.param("/premium/a", NO_RIGHTS, Verdict.DENIED, id="denied"),
        pytest.param("/both/a", PLAIN, Verdict.GRANTED, id="all-of-two"),
        pytest.param("/premium/a", "no-such-session", Verdict.UNAUTHENTICATED, id="rejected"),
    ],
)
async def test_a_cached_answer_is_what_check_gives_and_counts_the_same(
    start: Start, path: str, session: str, verdict: Verdict
) -> None:
    setup = await start(cache={"refresh_ahead": 0})
    req = request(path, session)
    await setup.service.check(req)  # the miss fills L1
    calls, before = setup.calls(), setup.lookups()
    peeked = setup.service.peek(req)
    after_peek = setup.lookups()
    checked = await setup.service.check(req)
    after_check = setup.lookups()
    assert peeked is not None
    assert peeked.verdict is verdict
    assert peeked == checked  # same instant, same entry: the same outcome
    peek_counted = {k: after_peek[k] - before[k] for k in before if after_peek[k] != before[k]}
    check_counted = {
        k: after_check[k] - after_peek[k] for k in before if after_check[k] != after_peek[k]
    }
    assert peek_counted == check_counted
    assert peek_counted  # a hit was counted
    assert setup.calls() == calls


async def test_expired_entries_are_left_to_check(start: Start) -> None:
    setup = await start(cache={"refresh_ahead": 0})
    req = request("/premium/a", PLAIN)
    await setup.service.check(req)
    setup.clock.advance(59)
    assert setup.service.peek(req) is not None
    setup.clock.advance(1)  # the access answer (default_ttl 60 s) is no longer fresh
    assert setup.service.peek(req) is None


async def settle(metrics: Metrics, cache: str) -> None:
    """Wait until every refresh started for ``cache`` has finished."""
    async with asyncio.timeout(5):
        while True:
            value = metrics.value
            started = value("paywall_refreshes_total", {"cache": cache, "result": "started"})
            done = value("paywall_refreshes_total", {"cache": cache, "result": "succeeded"})
            if done >= started:
                return
            await asyncio.sleep(0.01)


def refreshes(setup: Setup, cache: str) -> float:
    return setup.metrics.value("paywall_refreshes_total", {"cache": cache, "result": "started"})


async def test_without_schedule_the_refresh_window_is_left_to_check(start: Start) -> None:
    setup = await start(cache={"refresh_ahead": 10})
    req = request("/premium/a", PLAIN)
    await setup.service.check(req)
    setup.clock.advance(55)  # inside the access answer's last 10 s
    assert setup.service.peek(req) is None
    assert refreshes(setup, "access") == 0
    outcome = await setup.service.check(req)  # answers from the entry, starts the refresh
    assert outcome.cache == "hit"
    assert refreshes(setup, "access") == 1


# (cache, [cache] settings, seconds into that cache's refresh window and not the other's)
WINDOWS = [
    pytest.param("access", {"refresh_ahead": 10}, 55, id="access"),
    pytest.param("session", {"refresh_ahead": 10, "session_ttl": 30}, 25, id="session"),
]


@pytest.mark.parametrize(("cache", "settings", "into_window"), WINDOWS)
async def test_with_schedule_peek_answers_and_the_loop_starts_the_refresh(
    start: Start, cache: str, settings: dict[str, Any], into_window: float
) -> None:
    setup = await start(cache=settings)
    req = request("/premium/a", PLAIN)
    await setup.service.check(req)
    setup.clock.advance(into_window)
    scheduled: list[Callable[[], None]] = []
    peeked = setup.service.peek(req, schedule=scheduled.append)
    assert peeked is not None
    assert (peeked.verdict, peeked.cache) == (Verdict.GRANTED, "hit")
    assert len(scheduled) == 1  # handed over, not started on the calling thread
    assert refreshes(setup, cache) == 0
    calls = setup.calls()
    for callback in scheduled:  # what loop.call_soon_threadsafe does, here on the test's loop
        callback()
    assert refreshes(setup, cache) == 1
    await settle(setup.metrics, cache)
    assert setup.calls() == calls + 1  # the refresh's one platform call
    again: list[Callable[[], None]] = []
    successor = setup.service.peek(req, schedule=again.append)  # fresh again: out of the window
    assert successor is not None
    assert (successor.verdict, successor.cache) == (Verdict.GRANTED, "hit")
    assert again == []


async def test_a_short_lived_denial_is_answered_and_refreshed_once_per_window(
    start: Start,
) -> None:
    setup = await start()  # defaults: negative_ttl 10 s, refresh_ahead 10 s: always in window
    req = request("/premium/a", NO_RIGHTS)
    await setup.service.check(req)
    for _ in range(5):
        scheduled: list[Callable[[], None]] = []
        peeked = setup.service.peek(req, schedule=scheduled.append)
        assert peeked is not None
        assert peeked.verdict is Verdict.DENIED
        for callback in scheduled:
            callback()
    assert refreshes(setup, "access") == 1  # RefreshAhead: one per key per window
    await settle(setup.metrics, "access")


async def test_an_invalidated_customer_is_not_peeked(start: Start) -> None:
    setup = await start()
    req = request("/premium/a", PLAIN)
    await setup.service.check(req)
    assert setup.service.peek(req) is not None
    await setup.service.invalidate_customer("100001", "admin")
    assert setup.service.peek(req) is None


async def test_an_answer_only_in_redis_is_not_peeked(
    start: Start, redis_client: redis.Redis
) -> None:
    first = await start(redis_client=redis_client, cache={"redis_url": "redis://unused"})
    second = await start(redis_client=redis_client, cache={"redis_url": "redis://unused"})
    req = request("/premium/a", PLAIN)
    await first.service.check(req)  # stored in its L1 and in Redis
    assert second.service.peek(req) is None  # Redis is I/O: for check
    outcome = await second.service.check(req)
    assert outcome.cache == "hit"
    assert second.lookups()[("access", "l2", "hit")] == 1
    peeked = second.service.peek(req)  # copied into its L1 by that check
    assert peeked is not None
    assert peeked.cache == "hit"
    assert second.lookups()[("access", "l1", "hit")] == 1


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (MemoryCache's) to its end, without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    raise AssertionError("the coroutine suspended")


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Switch threads every microsecond: races that are rare at 5 ms become likely."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fine_switching")
def test_memory_cache_peek_is_safe_beside_writers_on_another_thread() -> None:
    clock = ManualClock()
    cache: MemoryCache[int] = MemoryCache(200, clock)
    errors: list[BaseException] = []
    stop = threading.Event()

    def entry(value: int, seconds: float) -> CacheEntry[int]:
        until = clock.now + timedelta(seconds=seconds)
        return CacheEntry(value, until, until)

    def writer() -> None:  # what the loop thread does: store, evict, expire, invalidate
        try:
            n = 0
            while not stop.is_set():
                n += 1
                _run(cache.set(f"k{n % 500}", entry(n, 1 + n % 7), customer_id=f"c{n % 50}"))
                if n % 97 == 0:
                    _run(cache.invalidate_customer(f"c{n % 50}"))
                if n % 1009 == 0:
                    clock.advance(1)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for n in range(20_000):
                found = cache.peek(f"k{n % 500}", customer_id=f"c{n % 50}")
                assert found is None or isinstance(found.value, int)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join(60)
    stop.set()
    threads[0].join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(cache) <= 200
