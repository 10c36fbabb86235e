"""AccessService end to end: PlenigoClient against the real simulator on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.access import (
    AccessOutcome,
    AccessRequest,
    AccessService,
    Credentials,
    Verdict,
    build_access_service,
)
from gateway.access.cached import CachedAccess
from gateway.config import PlatformSettings, Settings
from gateway.core.decision import evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.sandbox.app import STATE, SandboxOptions, create_app
from gateway.sandbox.data import load_data
from gateway.sandbox.model import Session
from tests.conftest import REPO_ROOT
from tests.service.conftest import T0, ManualClock, platform_calls

API_TOKEN = "sandbox-api-token"
SEED = load_data(REPO_ROOT / "gateway" / "resources" / "sandbox-data.json", T0)
ROUTES = [
    {"path": "/free/**", "public": True},
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/both/**", "access_rights": ["premium", "archive"], "require": "all"},
]


@dataclass
class Setup:
    service: AccessService
    metrics: Metrics
    clock: ManualClock
    app: web.Application
    server: TestServer
    http: aiohttp.ClientSession

    def calls(self, endpoint: str) -> float:
        """HTTP attempts the gateway made to one platform endpoint."""
        return platform_calls(self.metrics, [endpoint], ("200", "401", "404", "412", "500"))

    def platform_down(self, down: bool = True) -> None:
        self.app[STATE].options.error_rate = 1.0 if down else 0.0

    async def check(
        self, path: str, session: str | None = None, transfer: str | None = None
    ) -> AccessOutcome:
        credentials = Credentials(transfer_token=transfer, session_token=session)
        return await self.service.check(AccessRequest("GET", path, credentials))

    async def transfer_token(self, customer_id: str) -> str:
        headers = {"X-plenigo-token": API_TOKEN}

        async def post(path: str, body: Any) -> Any:
            url = self.server.make_url(f"/api/v3.0{path}")
            async with self.http.post(url, json=body, headers=headers) as response:
                assert response.status in (200, 202), await response.text()
                return await response.json()

        session = await post(f"/sessions/{customer_id}", {})
        created = await post(
            "/sessions/transferToken", {"customerSession": session["customerSession"]}
        )
        token: str = created["transferToken"]
        return token


Start = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def start(aiohttp_server: Any, http: aiohttp.ClientSession) -> Start:
    async def start(**sections: Any) -> Setup:
        clock = ManualClock()
        app = create_app(SEED, SandboxOptions(api_token=API_TOKEN), clock=clock)
        server = await aiohttp_server(app)
        metrics = Metrics()
        settings = Settings(routes=ROUTES, **sections)
        platform_settings = PlatformSettings(
            base_url=str(server.make_url("/api/v3.0")),
            api_token=API_TOKEN,
            max_retries=0,
        )
        client = PlenigoClient(http, platform_settings, clock=clock, observer=metrics.observer)
        service = build_access_service(settings, client, metrics, clock=clock)
        return Setup(service, metrics, clock, app, server, http)

    return start


async def test_public_route_needs_no_identity(start: Start) -> None:
    setup = await start()
    outcome = await setup.check("/free/story", session="garbage")
    assert outcome.verdict is Verdict.PUBLIC
    assert setup.calls("validate_session") == 0


async def test_unmatched_route_is_denied_by_default(start: Start) -> None:
    setup = await start()
    outcome = await setup.check("/elsewhere", session="demo-session-plain")
    assert (outcome.verdict, outcome.reason) == (Verdict.DENIED, "route_denied")
    assert setup.calls("validate_session") == 0


@pytest.mark.parametrize(
    ("path", "session", "verdict", "reason"),
    [
        pytest.param("/premium/a", "demo-session-plain", Verdict.GRANTED, "granted", id="plain"),
        pytest.param("/both/a", "demo-session-plain", Verdict.GRANTED, "granted", id="all"),
        pytest.param(
            "/premium/a",
            "demo-session-blocked-customer",
            Verdict.DENIED,
            "customer_blocked",
            id="blocked-customer",
        ),
        pytest.param(
            "/premium/a",
            "demo-session-expired-right",
            Verdict.DENIED,
            "platform_denied",
            id="expired",
        ),
        pytest.param(
            "/premium/a", "demo-session-blocked-item", Verdict.DENIED, None, id="blocked-item"
        ),
        pytest.param("/archive/a", "demo-session-no-rights", Verdict.DENIED, None, id="no-rights"),
        pytest.param(
            "/premium/a", None, Verdict.UNAUTHENTICATED, "no_credential", id="no-credential"
        ),
        pytest.param(
            "/premium/a",
            "not-a-session",
            Verdict.UNAUTHENTICATED,
            "invalid_credential",
            id="invalid-session",
        ),
        pytest.param(
            "/premium/a",
            "demo-session-expired",
            Verdict.UNAUTHENTICATED,
            "invalid_credential",
            id="expired-session",
        ),
    ],
)
async def test_decisions(
    start: Start, path: str, session: str | None, verdict: Verdict, reason: str | None
) -> None:
    setup = await start()
    outcome = await setup.check(path, session=session)
    assert outcome.verdict is verdict
    if reason is not None:
        assert outcome.reason == reason
    if verdict in (Verdict.GRANTED, Verdict.DENIED):
        assert outcome.cache == "miss"
        assert outcome.expires_at is not None
        assert outcome.expires_at > setup.clock.now


async def test_unknown_customer_is_denied_and_negative_cached(start: Start) -> None:
    setup = await start()
    ghost = Session("ghost-session", "ghostsession", "999999", T0)
    setup.app[STATE].data.sessions[ghost.token] = ghost
    first = await setup.check("/premium/a", session=ghost.token)
    assert (first.verdict, first.reason) == (Verdict.DENIED, "platform_denied")
    assert first.customer_id == "999999"
    second = await setup.check("/premium/a", session=ghost.token)
    assert (second.verdict, second.cache) == (Verdict.DENIED, "hit")
    assert setup.calls("has_access") == 1
    setup.clock.advance(10)  # negative_ttl
    await setup.check("/premium/a", session=ghost.token)
    assert setup.calls("has_access") == 2


async def test_cache_hit_asks_the_platform_once(start: Start) -> None:
    setup = await start()
    first = await setup.check("/premium/a", session="demo-session-plain")
    second = await setup.check("/premium/b", session="demo-session-plain")
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.verdict is Verdict.GRANTED
    assert second.expires_at == first.expires_at == T0 + timedelta(seconds=60)
    assert setup.calls("has_access") == 1
    assert setup.calls("validate_session") == 1
    assert (
        setup.metrics.value(
            "paywall_cache_lookups_total", {"cache": "access", "tier": "l1", "result": "hit"}
        )
        == 1
    )
    assert (
        setup.metrics.value(
            "paywall_cache_lookups_total", {"cache": "session", "tier": "l1", "result": "hit"}
        )
        == 1
    )
    setup.clock.advance(60)  # default_ttl: fetched again
    third = await setup.check("/premium/a", session="demo-session-plain")
    assert third.cache == "miss"
    assert setup.calls("has_access") == 2


async def test_invalidation_forces_a_fetch(start: Start) -> None:
    setup = await start()
    await setup.check("/premium/a", session="demo-session-plain")
    await setup.service.invalidate_customer("100001", source="callback")
    outcome = await setup.check("/premium/a", session="demo-session-plain")
    assert outcome.cache == "miss"
    assert setup.calls("has_access") == 2
    assert setup.metrics.value("paywall_invalidations_total", {"source": "callback"}) == 1


async def test_invalidation_during_a_fetch_is_not_lost(start: Start) -> None:
    # The platform answers "granted" slowly; the customer's right is revoked and the callback
    # invalidates while that answer is on its way. The old grant may serve the requests that
    # were already waiting, but it must not be cached, and a request arriving after the
    # invalidation must not join the old fetch.
    setup = await start()
    await setup.check("/archive/a", session="demo-session-plain")  # the session is cached
    assert setup.calls("has_access") == 1
    # A second of latency: the invalidation below must come while the answer is on its way,
    # on a loaded machine too.
    setup.app[STATE].options.latency = 1.0
    before = asyncio.create_task(setup.check("/premium/a", session="demo-session-plain"))
    await asyncio.sleep(0.05)  # the fetch is in flight (latency 1 s)
    await setup.service.invalidate_customer("100001", source="callback")
    after = asyncio.create_task(setup.check("/premium/a", session="demo-session-plain"))
    first, second = await asyncio.gather(before, after)
    assert first.cache == second.cache == "miss"
    assert setup.calls("has_access") == 3  # the late request did not join the old fetch
    setup.app[STATE].options.latency = 0.0
    third = await setup.check("/premium/a", session="demo-session-plain")
    assert third.cache == "hit"  # the late request's answer was stored
    assert setup.calls("has_access") == 3


async def test_concurrent_misses_share_one_platform_call(start: Start) -> None:
    setup = await start()
    setup.app[STATE].options.latency = 0.05
    outcomes = await asyncio.gather(
        *(setup.check("/premium/a", session="demo-session-plain") for _ in range(20))
    )
    assert {o.verdict for o in outcomes} == {Verdict.GRANTED}
    assert setup.calls("validate_session") == 1
    assert setup.calls("has_access") == 1
    assert setup.metrics.value("paywall_coalesced_total") == 38  # 19 validations + 19 checks


async def test_random_tokens_are_negative_cached(start: Start) -> None:
    setup = await start()
    for _ in range(100):
        outcome = await setup.check("/premium/a", session="random-token-4711")
        assert outcome.verdict is Verdict.UNAUTHENTICATED
    assert setup.calls("validate_session") == 1
    setup.clock.advance(30)  # invalid_session_ttl
    await setup.check("/premium/a", session="random-token-4711")
    assert setup.calls("validate_session") == 2


async def test_transfer_token_grants_once(start: Start) -> None:
    setup = await start()
    token = await setup.transfer_token("100001")
    first = await setup.check("/premium/a", transfer=token)
    assert first.verdict is Verdict.GRANTED
    assert first.session_token is not None
    assert first.customer_id == "100001"
    again = await setup.check("/premium/a", transfer=token)
    assert (again.verdict, again.reason) == (Verdict.UNAUTHENTICATED, "invalid_credential")
    # The new session works on its own.
    cookie = await setup.check("/premium/a", session=first.session_token)
    assert cookie.verdict is Verdict.GRANTED


async def test_concurrent_transfer_token_requests_share_one_exchange(start: Start) -> None:
    setup = await start()
    token = await setup.transfer_token("100001")
    outcomes = await asyncio.gather(*(setup.check("/premium/a", transfer=token) for _ in range(5)))
    assert {o.verdict for o in outcomes} == {Verdict.GRANTED}
    assert len({o.session_token for o in outcomes}) == 1
    assert setup.calls("transfer_token") == 1


async def test_used_transfer_token_falls_back_to_the_session(start: Start) -> None:
    setup = await start()
    outcome = await setup.check("/premium/a", transfer="used-token", session="demo-session-plain")
    assert outcome.verdict is Verdict.GRANTED
    assert outcome.session_token is None


async def test_fresh_entry_serves_while_the_platform_is_down(start: Start) -> None:
    setup = await start()
    await setup.check("/premium/a", session="demo-session-plain")
    setup.platform_down()
    outcome = await setup.check("/premium/a", session="demo-session-plain")
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
    assert setup.calls("has_access") == 1


async def test_expired_entry_serves_stale_while_the_platform_is_down(start: Start) -> None:
    setup = await start()
    await setup.check("/premium/a", session="demo-session-plain")
    setup.platform_down()
    setup.clock.advance(61)
    outcome = await setup.check("/premium/a", session="demo-session-plain")
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "stale")
    assert outcome.expires_at is None
    assert (
        setup.metrics.value(
            "paywall_cache_lookups_total", {"cache": "access", "tier": "l1", "result": "stale"}
        )
        == 1
    )
    setup.clock.advance(300)  # beyond stale_if_error: nothing usable (the session is stale too)
    gone = await setup.check("/premium/a", session="demo-session-plain")
    assert gone.verdict is Verdict.UNAVAILABLE


async def test_no_entry_and_platform_down_is_unavailable(start: Start) -> None:
    setup = await start()
    await setup.check("/premium/a", session="demo-session-plain")
    setup.platform_down()
    outcome = await setup.check("/archive/a", session="demo-session-plain")
    assert (outcome.verdict, outcome.reason) == (Verdict.UNAVAILABLE, "platform_unavailable")
    assert outcome.expires_at is None
    assert not outcome.fail_open


async def test_identity_failure_is_unavailable_even_with_fail_open(start: Start) -> None:
    setup = await start(access={"on_api_error": "allow"})
    setup.platform_down()
    outcome = await setup.check("/premium/a", session="demo-session-plain")
    assert (outcome.verdict, outcome.reason) == (Verdict.UNAVAILABLE, "identity_unavailable")


async def test_fail_open_grants_flagged(start: Start) -> None:
    setup = await start(access={"on_api_error": "allow"})
    await setup.check("/premium/a", session="demo-session-plain")
    setup.platform_down()
    outcome = await setup.check("/archive/a", session="demo-session-plain")
    assert outcome.verdict is Verdict.GRANTED
    assert outcome.fail_open
    assert outcome.expires_at is None


async def test_max_cache_date_in_the_past_is_not_stored(start: Start) -> None:
    setup = await start()
    setup.clock.advance(180)  # customer 100007's maxCacheDate was T0 + 2 min
    first = await setup.check("/premium/a", session="demo-session-short-cache")
    assert first.verdict is Verdict.GRANTED
    assert first.expires_at is None
    second = await setup.check("/premium/a", session="demo-session-short-cache")
    assert second.cache == "miss"
    assert setup.calls("has_access") == 2


async def test_max_cache_date_bounds_the_entry(start: Start) -> None:
    setup = await start()
    setup.clock.advance(100)  # 20 s before 100007's maxCacheDate
    first = await setup.check("/premium/a", session="demo-session-short-cache")
    assert first.expires_at == T0 + timedelta(seconds=120)
    setup.clock.advance(20)
    second = await setup.check("/premium/a", session="demo-session-short-cache")
    assert second.cache == "miss"


async def test_breaker_stops_calling_a_failing_platform(start: Start) -> None:
    setup = await start(cache={"stale_if_error": 0})
    setup.platform_down()
    for _ in range(10):
        outcome = await setup.check("/premium/a", session="demo-session-plain")
        assert outcome.verdict is Verdict.UNAVAILABLE
    assert setup.calls("validate_session") == 5  # platform.breaker_failures
    setup.platform_down(False)
    setup.clock.advance(10)  # breaker_open_seconds: one trial, which succeeds
    outcome = await setup.check("/premium/a", session="demo-session-plain")
    assert outcome.verdict is Verdict.GRANTED


def test_remembered_decision_is_reused_only_while_it_holds() -> None:
    policy = Settings().access.validity_policy()
    rule = AccessRule(("premium",))
    item = AccessItem("premium", granted=True, lifetime_end=T0 + timedelta(seconds=30))
    payload = AccessPayload("100001", False, True, (item,), fetched_at=T0)
    cached = CachedAccess(payload, evaluate_access(payload, rule, T0, policy), T0)
    assert cached.decide(rule, T0 + timedelta(seconds=29), policy) is cached.decision
    later = T0 + timedelta(seconds=30)
    assert cached.decide(rule, later, policy) == evaluate_access(payload, rule, later, policy)
    assert not cached.decision.granted
    # A clock that went backwards never reuses a decision made later.
    earlier = T0 - timedelta(seconds=1)
    assert cached.decide(rule, earlier, policy) == evaluate_access(payload, rule, earlier, policy)
