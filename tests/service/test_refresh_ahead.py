"""Refresh-ahead end to end: the access service against the simulator with a slow platform.

The simulator answers after ``LATENCY`` seconds, so a request that waits for the platform is
easy to tell from one answered from the cache (``FAST``). The gateway and the simulator share a
:class:`ManualClock`: entries age only when a test says so, while the platform's latency is real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from time import perf_counter
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.access import AccessOutcome, AccessRequest, AccessService, Credentials, Verdict
from gateway.access.build import build_access_service
from gateway.config import Settings
from gateway.core.payload import AccessPayload
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.sandbox.app import STATE, SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.web.app import create_app as create_gateway
from tests.service.conftest import T0, ManualClock, platform_calls
from tests.service.test_access_service import API_TOKEN, ROUTES, SEED

# A request that waits for the platform takes at least LATENCY; one answered from the cache
# takes a millisecond or so, and FAST leaves it room for a loaded machine (a garbage collection
# of a large test process, another process on the CPU) while staying well below LATENCY.
LATENCY = 0.6  # seconds the simulator takes for every answer
FAST = 0.25  # a request answered from the cache takes well under this
PLAIN = "demo-session-plain"  # customer 100001: premium without limits (default_ttl, 60 s)
SHORT_CACHE = "demo-session-short-cache"  # customer 100007: maxCacheDate fixed at T0 + 2 min


class Switchable:
    """The platform client, with hasAccess made to fail unexpectedly on demand (a bug, not the
    platform: something no adapter translates)."""

    def __init__(self, client: PlenigoClient) -> None:
        self.client = client
        self.fault: Exception | None = None

    async def customer_for_session(self, session_token: str) -> str:
        return await self.client.customer_for_session(session_token)

    async def exchange_transfer_token(self, transfer_token: str) -> str:
        return await self.client.exchange_transfer_token(transfer_token)

    async def check_access(
        self, customer_id: str, access_right_ids: Sequence[str]
    ) -> AccessPayload:
        if self.fault is not None:
            raise self.fault
        return await self.client.check_access(customer_id, access_right_ids)


@dataclass
class Gateway:
    service: AccessService
    metrics: Metrics
    clock: ManualClock
    sandbox: web.Application
    platform: Switchable

    def calls(self, endpoint: str) -> float:
        """HTTP attempts the gateway made to one platform endpoint."""
        return platform_calls(self.metrics, [endpoint])

    def refreshes(self, cache: str, result: str) -> float:
        return self.metrics.value("paywall_refreshes_total", {"cache": cache, "result": result})

    def platform_down(self, down: bool = True) -> None:
        self.sandbox[STATE].options.error_rate = 1.0 if down else 0.0

    async def warm(self, session: str = PLAIN, path: str = "/premium/a") -> None:
        """The cold request, with the platform's latency off for it (it only costs test time)."""
        options = self.sandbox[STATE].options
        options.latency = 0.0
        try:
            assert (await self.check(session, path)).cache == "miss"
        finally:
            options.latency = LATENCY

    async def check(self, session: str = PLAIN, path: str = "/premium/a") -> AccessOutcome:
        return await self.service.check(AccessRequest("GET", path, Credentials(None, session)))

    async def timed_check(
        self, session: str = PLAIN, path: str = "/premium/a"
    ) -> tuple[AccessOutcome, float]:
        started = perf_counter()
        outcome = await self.check(session, path)
        return outcome, perf_counter() - started

    async def settle(self, cache: str) -> None:
        """Wait until every refresh started for ``cache`` has finished."""
        await settle(self.metrics, cache)


async def settle(metrics: Metrics, cache: str) -> None:
    async with asyncio.timeout(5):
        while True:
            labels = {"cache": cache}
            value = metrics.value
            started = value("paywall_refreshes_total", {**labels, "result": "started"})
            done = sum(
                value("paywall_refreshes_total", {**labels, "result": result})
                for result in ("succeeded", "failed")
            )
            if done >= started:
                return
            await asyncio.sleep(0.01)


Start = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start(aiohttp_server: Any, http: aiohttp.ClientSession) -> AsyncIterator[Start]:
    """``await start(cache={...}, platform={...})``: a service against a slow simulator."""
    services: list[AccessService] = []

    async def start(**sections: Any) -> Gateway:
        clock = ManualClock()
        sandbox = create_sandbox(
            SEED, SandboxOptions(api_token=API_TOKEN, latency=LATENCY), clock=clock
        )
        server: TestServer = await aiohttp_server(sandbox)
        platform_section = {
            "base_url": str(server.make_url("/api/v3.0")),
            "api_token": API_TOKEN,
            "max_retries": 0,
            **sections.pop("platform", {}),
        }
        settings = Settings(routes=ROUTES, platform=platform_section, **sections)
        metrics = Metrics()
        client = PlenigoClient(http, settings.platform, clock=clock, observer=metrics.observer)
        platform = Switchable(client)
        service = build_access_service(settings, platform, metrics, clock=clock)
        services.append(service)
        return Gateway(service, metrics, clock, sandbox, platform)

    yield start
    for service in services:
        await service.close()


# (cache, [cache] settings, seconds after the cold request to be inside that cache's window
# and not the other's, the endpoint a refresh calls, the other endpoint).
HOT_ENTRIES = [
    pytest.param("access", {}, 51, "has_access", "validate_session", id="access"),
    pytest.param(
        "session", {"session_ttl": 30}, 21, "validate_session", "has_access", id="session"
    ),
]


@pytest.mark.parametrize(("cache", "settings", "into_window", "endpoint", "other"), HOT_ENTRIES)
async def test_a_hot_entry_is_refreshed_while_nobody_waits(
    start: Start,
    cache: str,
    settings: dict[str, Any],
    into_window: float,
    endpoint: str,
    other: str,
) -> None:
    gw = await start(cache=settings)
    cold, seconds = await gw.timed_check()
    assert cold.cache == "miss"
    assert seconds >= 2 * LATENCY  # the session, then the access answer
    gw.clock.advance(into_window)  # 9 s before the entry's fresh_until: inside the window
    for _ in range(5):  # answered from the entry while its refresh waits for the platform
        outcome, seconds = await gw.timed_check()
        assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
        assert seconds < FAST
        await asyncio.sleep(0.02)
    assert gw.refreshes(cache, "started") == 1
    await gw.settle(cache)
    assert gw.refreshes(cache, "succeeded") == 1
    assert (gw.calls(endpoint), gw.calls(other)) == (2, 1)

    gw.clock.advance(10)  # past the old entry's fresh_until: the refreshed one serves
    outcome, seconds = await gw.timed_check()
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
    assert seconds < FAST
    assert (gw.calls(endpoint), gw.calls(other)) == (2, 1)
    if cache == "access":
        assert outcome.expires_at == T0 + timedelta(seconds=into_window + 60)


async def test_a_rejected_session_is_not_refreshed(start: Start) -> None:
    # Its entry only spares the platform a flood of the same bad token: refreshing it would
    # cost calls and help no customer.
    gw = await start()
    assert (await gw.check("not-a-session")).verdict is Verdict.UNAUTHENTICATED
    gw.clock.advance(21)  # inside the last 10 s of invalid_session_ttl (30 s)
    outcome, seconds = await gw.timed_check("not-a-session")
    assert (outcome.verdict, seconds < FAST) == (Verdict.UNAUTHENTICATED, True)
    assert gw.refreshes("session", "started") == 0
    assert gw.calls("validate_session") == 1


async def test_concurrent_requests_in_the_window_start_one_refresh(start: Start) -> None:
    gw = await start()
    await gw.warm()
    gw.clock.advance(51)
    answers = await asyncio.gather(*(gw.timed_check() for _ in range(50)))
    assert {(outcome.verdict, outcome.cache) for outcome, _ in answers} == {
        (Verdict.GRANTED, "hit")
    }
    assert max(seconds for _, seconds in answers) < FAST
    await gw.settle("access")
    assert gw.refreshes("access", "started") == 1
    assert gw.calls("has_access") == 2
    assert gw.metrics.value("paywall_coalesced_total") == 0  # not 49 refreshes sharing a call


async def test_a_failing_refresh_leaves_the_entry_serving_until_it_expires(start: Start) -> None:
    gw = await start()
    await gw.warm()
    gw.platform_down()
    gw.clock.advance(51)
    for _ in range(9):  # T0 + 51 s ... 59 s: the whole rest of the window
        outcome, seconds = await gw.timed_check()
        assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
        assert seconds < FAST
        await gw.settle("access")
        gw.clock.advance(1)
    # One refresh, which failed, and no other in that window: a platform that is down is not
    # asked on every request.
    assert (gw.refreshes("access", "started"), gw.refreshes("access", "failed")) == (1, 1)
    assert gw.calls("has_access") == 2
    # Expired (T0 + 60 s): the request path's stale-if-error takes over, as without refreshes.
    outcome = await gw.check()
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "stale")


async def test_a_refresh_refused_by_the_open_breaker_fails_quietly(start: Start) -> None:
    gw = await start(platform={"breaker_failures": 1})
    await gw.warm()
    gw.clock.advance(50.5)
    gw.platform_down()
    refused = await gw.check(path="/archive/a")  # a cold key: the failure opens the breaker
    assert refused.verdict is Verdict.UNAVAILABLE
    gw.platform_down(False)  # back, but the breaker stays open for 10 s
    gw.clock.advance(0.5)
    outcome, seconds = await gw.timed_check()
    assert (outcome.verdict, outcome.cache, seconds < FAST) == (Verdict.GRANTED, "hit", True)
    await gw.settle("access")
    assert gw.refreshes("access", "failed") == 1
    assert gw.calls("has_access") == 2  # the cold one and the failed one: not the refresh


async def test_an_unexpected_refresh_error_is_logged_and_counted(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start()
    await gw.warm()
    gw.platform.fault = RuntimeError("a bug in an adapter")
    gw.clock.advance(51)
    with caplog.at_level(logging.WARNING, logger="gateway.access.refresh"):
        outcome, seconds = await gw.timed_check()
        assert (outcome.verdict, outcome.cache, seconds < FAST) == (Verdict.GRANTED, "hit", True)
        await gw.settle("access")
    assert gw.refreshes("access", "failed") == 1
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError]
    outcome = await gw.check()  # still served from the entry
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")


@pytest.mark.parametrize(
    ("refresh_ahead", "refreshed"),
    [pytest.param(10.0, True, id="on"), pytest.param(0.0, False, id="zero-disables")],
)
async def test_zero_disables_refresh_ahead(
    start: Start, refresh_ahead: float, refreshed: bool
) -> None:
    gw = await start(cache={"refresh_ahead": refresh_ahead})
    await gw.warm()
    gw.clock.advance(59)
    outcome, seconds = await gw.timed_check()
    assert (outcome.cache, seconds < FAST) == ("hit", True)
    await gw.settle("access")  # a refresh that was started has finished
    assert gw.calls("has_access") == 1 + refreshed
    assert gw.refreshes("access", "started") == refreshed
    gw.clock.advance(1)
    outcome, seconds = await gw.timed_check()
    if refreshed:
        assert (outcome.cache, seconds < FAST) == ("hit", True)
    else:
        assert (outcome.cache, seconds >= LATENCY) == ("miss", True)


async def test_an_entry_refreshed_to_the_same_end_is_not_refreshed_again(start: Start) -> None:
    gw = await start()
    await gw.warm(SHORT_CACHE)
    gw.clock.advance(110)  # 10 s before the fixed maxCacheDate
    for _ in range(10):  # every second of the window
        outcome, seconds = await gw.timed_check(SHORT_CACHE)
        assert (outcome.cache, seconds < FAST) == ("hit", True)
        assert outcome.expires_at == T0 + timedelta(seconds=120)  # the refresh changed nothing
        await gw.settle("access")
        gw.clock.advance(1)
    assert gw.refreshes("access", "started") == 1
    assert gw.calls("has_access") == 2


async def test_an_invalidation_during_a_refresh_is_respected(start: Start) -> None:
    gw = await start()
    await gw.warm()
    gw.clock.advance(51)
    await gw.check()  # starts the refresh
    await asyncio.sleep(0.05)  # it is waiting for the platform
    await gw.service.invalidate_customer("100001", source="callback")
    await gw.settle("access")
    assert gw.refreshes("access", "succeeded") == 1
    outcome = await gw.check()  # the refresh's answer was asked for before the invalidation
    assert outcome.cache == "miss"
    assert gw.calls("has_access") == 3


async def test_a_miss_during_a_refresh_shares_its_platform_call(start: Start) -> None:
    gw = await start()
    await gw.warm()
    gw.clock.advance(59.9)
    await gw.check()  # starts the refresh
    await asyncio.sleep(0.05)
    gw.clock.advance(0.2)  # the entry expires while the refresh waits for the platform
    outcome = await gw.check()
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "miss")
    assert gw.calls("has_access") == 2
    assert gw.metrics.value("paywall_coalesced_total") == 1


async def test_each_process_refreshes_its_own_entry(
    aiohttp_server: Any, http: aiohttp.ClientSession, redis_url: str, redis_client: redis.Redis
) -> None:
    # Two processes sharing Redis, both hot on one customer: one refresh holds the key's
    # cross-process marker, the other waits for a newer answer than the entry it has (its own
    # L1 entry, still fresh, does not count), then fetches; after the old fresh_until both serve
    # from their cache.
    clock = ManualClock()
    sandbox = create_sandbox(
        SEED, SandboxOptions(api_token=API_TOKEN, latency=LATENCY), clock=clock
    )
    platform: TestServer = await aiohttp_server(sandbox)
    settings = Settings(
        routes=ROUTES,
        platform={
            "base_url": str(platform.make_url("/api/v3.0")),
            "api_token": API_TOKEN,
            "max_retries": 0,
            # How long a waiting process waits, too; a real answer takes LATENCY, and must
            # arrive within it on a loaded machine as well.
            "request_timeout": 3 * LATENCY,
        },
        cache={"redis_url": redis_url, "redis_timeout": 1.0},
    )
    metrics = Metrics()
    processes: list[tuple[AccessService, redis.Redis]] = []
    for _ in range(2):
        client = redis.from_url(redis_url)
        platform_client = PlenigoClient(
            http, settings.platform, clock=clock, observer=metrics.observer
        )
        service = build_access_service(
            settings, platform_client, metrics, clock=clock, redis_client=client
        )
        processes.append((service, client))
    request = AccessRequest("GET", "/premium/a", Credentials(None, PLAIN))
    try:
        for service, _ in processes:  # the first asks the platform, the second finds it in L2
            assert (await service.check(request)).verdict is Verdict.GRANTED
        clock.advance(51)
        for service, _ in processes:
            assert (await service.check(request)).cache == "hit"
        await settle(metrics, "access")
        labels = {"cache": "access", "result": "started"}
        assert metrics.value("paywall_refreshes_total", labels) == 2  # one per process
        clock.advance(10)
        for service, _ in processes:
            started = perf_counter()
            outcome = await service.check(request)
            assert (outcome.cache, perf_counter() - started < FAST) == ("hit", True)
    finally:
        for service, client in processes:
            await service.close()
            await client.aclose()


async def test_close_cancels_refreshes_in_flight(start: Start) -> None:
    gw = await start()
    await gw.warm()
    await gw.warm(path="/archive/a")
    gw.clock.advance(51)
    await gw.check()  # starts a refresh of /premium's entry
    await asyncio.sleep(0.05)  # it is waiting for the platform
    started = perf_counter()
    await gw.service.close()
    assert perf_counter() - started < FAST  # cancelled, not waited for
    await asyncio.sleep(LATENCY)  # the platform's answer would have arrived by now
    assert gw.refreshes("access", "started") == 1
    assert (gw.refreshes("access", "succeeded"), gw.refreshes("access", "failed")) == (0, 0)
    outcome = await gw.check(path="/archive/a")  # closed: still answered, nothing started
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
    assert gw.refreshes("access", "started") == 1


async def test_the_app_cancels_refreshes_at_shutdown(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    sandbox = create_sandbox(
        SEED, SandboxOptions(api_token=API_TOKEN, latency=LATENCY), clock=clock
    )
    platform: TestServer = await aiohttp_server(sandbox)
    settings = Settings(
        routes=ROUTES,
        server={"mode": "auth_request"},
        platform={
            "base_url": str(platform.make_url("/api/v3.0")),
            "api_token": API_TOKEN,
            "max_retries": 0,
        },
    )
    metrics = Metrics()
    gateway: TestServer = await aiohttp_server(
        create_gateway(settings, metrics=metrics, clock=clock)
    )
    headers = {"X-Original-URI": "/premium/a", "Cookie": f"paywall_session={PLAIN}"}
    url = gateway.make_url("/_paywall/auth")
    async with http.get(url, headers=headers) as response:
        assert response.headers["X-Paywall-Cache"] == "miss"
    clock.advance(51)
    async with http.get(url, headers=headers) as response:
        assert response.headers["X-Paywall-Cache"] == "hit"
    await asyncio.sleep(0.05)  # the refresh is waiting for the platform
    await gateway.close()
    await asyncio.sleep(LATENCY)
    assert metrics.value("paywall_refreshes_total", {"cache": "access", "result": "started"}) == 1
    # Cancelled before the platform client closed: neither finished nor failed.
    for result in ("succeeded", "failed"):
        labels = {"cache": "access", "result": result}
        assert metrics.value("paywall_refreshes_total", labels) == 0
