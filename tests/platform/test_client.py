"""PlenigoClient against purpose-built platforms on loopback, and against the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from pydantic import SecretStr

from gateway.config import PlatformSettings
from gateway.core.payload import AccessItem
from gateway.errors import (
    BadPlatformResponse,
    InvalidSession,
    InvalidTransferToken,
    PlatformAuthError,
    PlatformError,
    PlatformUnavailable,
    RateLimited,
    UnknownCustomer,
)
from gateway.platform import AccessProvider, IdentityProvider, PlenigoClient
from gateway.sandbox.app import SandboxOptions, create_app
from gateway.sandbox.data import SandboxData, load_data
from tests.conftest import REPO_ROOT

API_TOKEN = "API-TOKEN-dont-leak-1"
SESSION_TOKEN = "SESSION-TOKEN-dont-leak-2"
TRANSFER_TOKEN = "TRANSFER-TOKEN-dont-leak-3"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

Action = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Action:
    """A scripted answer: ``body`` bytes go out as they are, anything else as JSON."""

    async def action(request: web.Request) -> web.StreamResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(
            status=status, body=raw, headers=headers, content_type="application/json"
        )

    return action


def session_ok(customer_id: str = "100001") -> Action:
    return reply(200, {"id": "s1", "customerId": customer_id, "type": "CUSTOMER_SESSION"})


def error(status: int, code: int, message: str = "error") -> Action:
    return reply(status, {"errorCode": code, "errorMessage": message})


@dataclass
class FakePlatform:
    """Answers every request with the next scripted action; the last one repeats."""

    script: list[Action] = field(default_factory=list)
    seen: list[web.Request] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.arrived.set()
        action = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return await action(request)

    def hang(self) -> Action:
        """An answer that only comes when the test is over (for timeouts)."""

        async def action(request: web.Request) -> web.StreamResponse:
            await self.release.wait()
            return web.Response(status=503)

        return action


@dataclass
class Recorder:
    sleeps: list[float] = field(default_factory=list)
    observed: list[tuple[str, str]] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def observe(self, endpoint: str, status: str, seconds: float) -> None:
        assert seconds >= 0
        self.observed.append((endpoint, status))

    @property
    def statuses(self) -> list[str]:
        return [status for _, status in self.observed]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake(aiohttp_server: Any) -> AsyncIterator[tuple[FakePlatform, TestServer]]:
    platform = FakePlatform()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", platform.handle)
    server = await aiohttp_server(app)
    yield platform, server
    platform.release.set()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def settings(port: int, **overrides: Any) -> PlatformSettings:
    values: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}/api/v3.0",
        "api_token": SecretStr(API_TOKEN),
        "connect_timeout": 1.0,
        "request_timeout": 2.0,
        "max_retries": 2,
        "retry_backoff": 0.05,
        "retry_backoff_max": 1.0,
        "max_retry_after": 2.0,
    }
    values.update(overrides)
    return PlatformSettings(**values)


@pytest.fixture
def make_client(
    fake: tuple[FakePlatform, TestServer], http: aiohttp.ClientSession, recorder: Recorder
) -> Callable[..., tuple[PlenigoClient, FakePlatform]]:
    platform, server = fake

    def make(*script: Action, **overrides: Any) -> tuple[PlenigoClient, FakePlatform]:
        platform.script[:] = script
        clock = overrides.pop("clock", lambda: T0)
        jitter = overrides.pop("jitter", lambda: 1.0)
        client = PlenigoClient(
            http,
            settings(server.port, **overrides),
            clock=clock,
            sleep=recorder.sleep,
            jitter=jitter,
            observer=recorder.observe,
        )
        return client, platform

    return make


MakeClient = Callable[..., tuple[PlenigoClient, FakePlatform]]


# -- requests ------------------------------------------------------------------------------


async def test_validate_sends_token_headers_and_path(make_client: MakeClient) -> None:
    client, platform = make_client(session_ok("6342000"))
    assert await client.customer_for_session(SESSION_TOKEN) == "6342000"
    (request,) = platform.seen
    assert request.method == "GET"
    assert request.path == "/api/v3.0/sessions/validate"
    assert dict(request.query) == {"sessionToken": SESSION_TOKEN}
    assert request.headers["X-plenigo-token"] == API_TOKEN
    assert request.headers["Accept"] == "application/json"


async def test_exchange_sends_the_transfer_token(make_client: MakeClient) -> None:
    client, platform = make_client(reply(200, {"customerSession": "new-session"}))
    assert await client.exchange_transfer_token(TRANSFER_TOKEN) == "new-session"
    (request,) = platform.seen
    assert request.path == "/api/v3.0/sessions/transferToken"
    assert dict(request.query) == {"transferToken": TRANSFER_TOKEN}
    assert request.headers["X-plenigo-token"] == API_TOKEN


async def test_has_access_builds_payload(make_client: MakeClient, recorder: Recorder) -> None:
    body = {
        "customerId": "100001",
        "customerBlocked": False,
        "accessGranted": True,
        "items": [
            {
                "accessRightUniqueId": "premium",
                "accessGranted": True,
                "blocked": False,
                "accessTimeStart": "06:00:00",
                "maxCacheDate": "2025-03-01T12:05:00Z",
                "somethingNew": 1,
            }
        ],
    }
    client, platform = make_client(reply(200, body))
    payload = await client.check_access("100001", ["premium", "archive", "premium"])
    (request,) = platform.seen
    assert request.path == "/api/v3.0/accessRights/100001/hasAccess"
    assert dict(request.query) == {"accessRightUniqueIds": "premium,archive"}
    assert request.headers["X-plenigo-token"] == API_TOKEN
    assert payload.customer_id == "100001"
    assert payload.granted
    assert not payload.customer_blocked
    assert payload.fetched_at == T0
    (item,) = payload.items
    assert item.access_right_id == "premium"
    assert item.granted
    assert item.max_cache_date == T0 + timedelta(minutes=5)
    assert recorder.observed == [("has_access", "200")]


@pytest.mark.parametrize(
    ("customer_id", "raw_path"),
    [
        pytest.param("a/b", "/api/v3.0/accessRights/a%2Fb/hasAccess", id="slash"),
        pytest.param("x?y=1", "/api/v3.0/accessRights/x%3Fy%3D1/hasAccess", id="query"),
        pytest.param("x#y", "/api/v3.0/accessRights/x%23y/hasAccess", id="fragment"),
        pytest.param("%2F", "/api/v3.0/accessRights/%252F/hasAccess", id="percent"),
        pytest.param("../x", "/api/v3.0/accessRights/..%2Fx/hasAccess", id="dot-dot-slash"),
        pytest.param("a b", "/api/v3.0/accessRights/a%20b/hasAccess", id="space"),
    ],
)
async def test_customer_id_is_one_encoded_segment(
    make_client: MakeClient, customer_id: str, raw_path: str
) -> None:
    client, platform = make_client(reply(404, {"errorCode": 99404, "errorMessage": "nf"}))
    with pytest.raises(UnknownCustomer):
        await client.check_access(customer_id, ["premium"])
    (request,) = platform.seen
    assert request.raw_path.split("?")[0] == raw_path
    assert dict(request.query) == {"accessRightUniqueIds": "premium"}


@pytest.mark.parametrize("customer_id", ["", ".", ".."])
async def test_dot_segments_are_unknown_without_asking(
    make_client: MakeClient, customer_id: str
) -> None:
    client, platform = make_client(reply(500))
    with pytest.raises(UnknownCustomer):
        await client.check_access(customer_id, ["premium"])
    assert platform.seen == []


@pytest.mark.parametrize(
    ("ids", "exception"),
    [
        pytest.param([], ValueError, id="empty"),
        pytest.param(["a,b"], ValueError, id="comma"),
        pytest.param([""], ValueError, id="empty-id"),
        pytest.param("premium", TypeError, id="bare-string"),
    ],
)
async def test_access_right_ids_are_checked(
    make_client: MakeClient, ids: Any, exception: type[Exception]
) -> None:
    client, platform = make_client(reply(500))
    with pytest.raises(exception):
        await client.check_access("1", ids)
    assert platform.seen == []


async def test_empty_tokens_are_invalid_without_asking(make_client: MakeClient) -> None:
    client, platform = make_client(reply(500))
    with pytest.raises(InvalidSession):
        await client.customer_for_session("")
    with pytest.raises(InvalidTransferToken):
        await client.exchange_transfer_token("")
    assert platform.seen == []


@pytest.mark.parametrize(
    ("base", "path"),
    [
        pytest.param("/api/v3.0/", "/api/v3.0/sessions/validate", id="trailing-slash"),
        pytest.param("", "/sessions/validate", id="root"),
    ],
)
async def test_base_url_forms(
    fake: tuple[FakePlatform, TestServer], http: aiohttp.ClientSession, base: str, path: str
) -> None:
    platform, server = fake
    platform.script[:] = [session_ok()]
    client = PlenigoClient(
        http, settings(server.port, base_url=f"http://127.0.0.1:{server.port}{base}")
    )
    await client.customer_for_session(SESSION_TOKEN)
    assert platform.seen[0].path == path


def test_implements_both_protocols(http: aiohttp.ClientSession) -> None:
    client = PlenigoClient(http, settings(1))
    assert isinstance(client, IdentityProvider)
    assert isinstance(client, AccessProvider)


# -- status mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "exception"),
    [
        pytest.param(error(401, 99015), PlatformAuthError, id="401-api-token"),
        pytest.param(error(401, 20028), InvalidSession, id="401-session"),
        pytest.param(reply(401, b""), InvalidSession, id="401-no-body"),
        pytest.param(reply(401, b"<html>"), InvalidSession, id="401-html"),
        pytest.param(error(400, 99400), InvalidSession, id="400"),
        pytest.param(error(403, 99403), BadPlatformResponse, id="403"),
        pytest.param(error(404, 99404), BadPlatformResponse, id="404"),
        pytest.param(reply(302, b"", {"Location": "/elsewhere"}), BadPlatformResponse, id="302"),
        pytest.param(reply(204, b""), BadPlatformResponse, id="204"),
    ],
)
async def test_validate_status_mapping(
    make_client: MakeClient, action: Action, exception: type[PlatformError]
) -> None:
    client, platform = make_client(action)
    with pytest.raises(exception) as caught:
        await client.customer_for_session(SESSION_TOKEN)
    assert type(caught.value) is exception
    assert len(platform.seen) == 1  # not retried, redirect not followed


@pytest.mark.parametrize(
    ("action", "exception"),
    [
        pytest.param(error(401, 99015), PlatformAuthError, id="401-api-token"),
        pytest.param(error(401, 20032), InvalidTransferToken, id="401-other"),
        pytest.param(error(404, 20032), InvalidTransferToken, id="404"),
        pytest.param(error(412, 99000), InvalidTransferToken, id="412"),
        pytest.param(error(400, 99400), InvalidTransferToken, id="400"),
        pytest.param(error(403, 99403), BadPlatformResponse, id="403"),
    ],
)
async def test_transfer_status_mapping(
    make_client: MakeClient, action: Action, exception: type[PlatformError]
) -> None:
    client, platform = make_client(action)
    with pytest.raises(exception) as caught:
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert type(caught.value) is exception
    assert len(platform.seen) == 1


@pytest.mark.parametrize(
    ("action", "exception"),
    [
        pytest.param(error(404, 99404), UnknownCustomer, id="404"),
        pytest.param(error(401, 99015), PlatformAuthError, id="401-api-token"),
        pytest.param(error(401, 12345), PlatformAuthError, id="401-other"),
        pytest.param(error(400, 99400), BadPlatformResponse, id="400"),
        pytest.param(error(403, 99403), BadPlatformResponse, id="403"),
        pytest.param(
            reply(200, {"customerId": "999", "items": []}), BadPlatformResponse, id="other-customer"
        ),
    ],
)
async def test_has_access_status_mapping(
    make_client: MakeClient, action: Action, exception: type[PlatformError]
) -> None:
    client, platform = make_client(action)
    with pytest.raises(exception) as caught:
        await client.check_access("100001", ["premium"])
    assert type(caught.value) is exception
    assert len(platform.seen) == 1


async def test_has_access_without_customer_id_in_answer(make_client: MakeClient) -> None:
    client, _ = make_client(reply(200, {"accessGranted": False}))
    payload = await client.check_access("100001", ["premium"])
    assert payload.customer_id == "100001"
    assert payload.items == ()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="malformed"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"customerId": 100001}', id="wrong-type"),
        pytest.param(b'{"id": "s1"}', id="missing-customer"),
        pytest.param(b"[]", id="array"),
    ],
)
async def test_bad_bodies_are_bad_responses_not_retried(
    make_client: MakeClient, recorder: Recorder, body: bytes
) -> None:
    client, platform = make_client(reply(200, body))
    with pytest.raises(BadPlatformResponse, match="validate_session: HTTP 200"):
        await client.customer_for_session(SESSION_TOKEN)
    assert len(platform.seen) == 1
    assert recorder.sleeps == []


async def test_schema_violation_in_has_access(make_client: MakeClient) -> None:
    body = {"customerId": "1", "items": [{"accessRightUniqueId": "a", "accessGranted": "yes"}]}
    client, _ = make_client(reply(200, body))
    with pytest.raises(BadPlatformResponse, match=r"items\.0\.accessGranted"):
        await client.check_access("1", ["a"])


async def test_oversized_body_is_refused(make_client: MakeClient) -> None:
    huge = b'{"customerId": "1", "pad": "' + b"x" * (2 << 20) + b'"}'
    client, _ = make_client(reply(200, huge))
    with pytest.raises(BadPlatformResponse, match="too large"):
        await client.customer_for_session(SESSION_TOKEN)


# -- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_then_success(make_client: MakeClient, recorder: Recorder, status: int) -> None:
    client, platform = make_client(
        error(status, 99000 + status), error(status, 99000 + status), session_ok(), max_retries=2
    )
    assert await client.customer_for_session(SESSION_TOKEN) == "100001"
    assert len(platform.seen) == 3
    assert recorder.observed == [("validate_session", str(status))] * 2 + [
        ("validate_session", "200")
    ]
    assert recorder.sleeps == pytest.approx([0.05, 0.1])


async def test_backoff_is_capped_and_jittered(make_client: MakeClient, recorder: Recorder) -> None:
    client, platform = make_client(
        reply(503, b""), max_retries=4, retry_backoff=0.3, retry_backoff_max=1.0, jitter=lambda: 0.5
    )
    with pytest.raises(PlatformUnavailable) as caught:
        await client.check_access("1", ["a"])
    assert type(caught.value) is PlatformUnavailable
    assert len(platform.seen) == 5
    # min(cap, 0.3 * 2**n) * jitter
    assert recorder.sleeps == pytest.approx([0.15, 0.3, 0.5, 0.5])


async def test_exhausted_retries_are_unavailable(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client, platform = make_client(error(500, 99500), max_retries=2)
    with pytest.raises(PlatformUnavailable, match="has_access: HTTP 500") as caught:
        await client.check_access("1", ["a"])
    assert type(caught.value) is PlatformUnavailable
    assert len(platform.seen) == 3
    assert len(recorder.sleeps) == 2


async def test_no_retries_configured(make_client: MakeClient, recorder: Recorder) -> None:
    client, platform = make_client(error(502, 99502), max_retries=0)
    with pytest.raises(PlatformUnavailable):
        await client.customer_for_session(SESSION_TOKEN)
    assert len(platform.seen) == 1
    assert recorder.sleeps == []


async def test_429_retry_after_seconds(make_client: MakeClient, recorder: Recorder) -> None:
    client, _platform = make_client(
        reply(429, {"errorCode": 99429, "errorMessage": "slow"}, {"Retry-After": "1"}),
        session_ok(),
    )
    assert await client.customer_for_session(SESSION_TOKEN) == "100001"
    assert recorder.sleeps == [1.0]
    assert recorder.statuses == ["429", "200"]


async def test_429_retry_after_http_date(make_client: MakeClient, recorder: Recorder) -> None:
    when = format_datetime(T0 + timedelta(seconds=2), usegmt=True)
    client, _ = make_client(reply(429, b"", {"Retry-After": when}), session_ok())
    assert await client.customer_for_session(SESSION_TOKEN) == "100001"
    assert recorder.sleeps == [2.0]


async def test_429_retry_after_date_in_the_past(
    make_client: MakeClient, recorder: Recorder
) -> None:
    when = format_datetime(T0 - timedelta(minutes=1), usegmt=True)
    client, _ = make_client(reply(429, b"", {"Retry-After": when}), session_ok())
    await client.customer_for_session(SESSION_TOKEN)
    assert recorder.sleeps == [0.0]


@pytest.mark.parametrize("header", ["30", "Sat, 01 Mar 2025 12:01:00 GMT"])
async def test_429_retry_after_above_max_fails_at_once(
    make_client: MakeClient, recorder: Recorder, header: str
) -> None:
    client, platform = make_client(reply(429, b"", {"Retry-After": header}), session_ok())
    with pytest.raises(RateLimited) as caught:
        await client.check_access("1", ["a"])
    assert caught.value.retry_after == pytest.approx(float(header) if header == "30" else 60.0)
    assert len(platform.seen) == 1
    assert recorder.sleeps == []


@pytest.mark.parametrize("header", [None, "soon", "inf", "nan"])
async def test_429_without_usable_hint_backs_off(
    make_client: MakeClient, recorder: Recorder, header: str | None
) -> None:
    headers = {"Retry-After": header} if header else None
    client, platform = make_client(reply(429, b"", headers), max_retries=2)
    with pytest.raises(RateLimited) as caught:
        await client.check_access("1", ["a"])
    assert caught.value.retry_after is None
    assert len(platform.seen) == 3
    assert recorder.sleeps == pytest.approx([0.05, 0.1])


async def test_429_exhausted_is_rate_limited(make_client: MakeClient, recorder: Recorder) -> None:
    client, platform = make_client(reply(429, b"", {"Retry-After": "0.5"}), max_retries=1)
    with pytest.raises(RateLimited) as caught:
        await client.customer_for_session(SESSION_TOKEN)
    assert caught.value.retry_after == 0.5
    assert len(platform.seen) == 2
    assert recorder.sleeps == [0.5]


async def test_timeout_is_retried_then_unavailable(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client, platform = make_client(reply(200), request_timeout=0.05, max_retries=1)
    platform.script[:] = [platform.hang()]
    with pytest.raises(PlatformUnavailable, match="validate_session: timed out") as caught:
        await client.customer_for_session(SESSION_TOKEN)
    assert type(caught.value) is PlatformUnavailable
    assert recorder.statuses == ["timeout", "timeout"]
    assert len(recorder.sleeps) == 1


async def test_timeout_then_success(make_client: MakeClient, recorder: Recorder) -> None:
    # The timeout must outlast a real reply on a loaded machine: 0.05 s did not, once, in CI.
    client, platform = make_client(reply(200), request_timeout=1.0)
    platform.script[:] = [platform.hang(), reply(200, {"customerId": "1", "items": []})]
    payload = await client.check_access("1", ["a"])
    assert payload.customer_id == "1"
    assert recorder.statuses == ["timeout", "200"]


@pytest.mark.parametrize("method", ["validate", "transfer", "access"])
async def test_connection_refused_is_retried_then_unavailable(
    http: aiohttp.ClientSession, recorder: Recorder, method: str
) -> None:
    client = PlenigoClient(
        http,
        settings(unused_port(), max_retries=2),
        sleep=recorder.sleep,
        observer=recorder.observe,
    )
    calls = {
        "validate": lambda: client.customer_for_session(SESSION_TOKEN),
        # Refused connections provably never reached the platform: safe even for a transfer token.
        "transfer": lambda: client.exchange_transfer_token(TRANSFER_TOKEN),
        "access": lambda: client.check_access("1", ["a"]),
    }
    with pytest.raises(PlatformUnavailable, match="connection failed") as caught:
        await calls[method]()
    assert type(caught.value) is PlatformUnavailable
    assert recorder.statuses == ["connection_error"] * 3
    assert len(recorder.sleeps) == 2


# -- the one-time transfer token -----------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_transfer_token_not_retried_after_5xx(
    make_client: MakeClient, recorder: Recorder, status: int
) -> None:
    client, platform = make_client(error(status, 99000), reply(200, {"customerSession": "s"}))
    with pytest.raises(PlatformUnavailable, match=f"transfer_token: HTTP {status}"):
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert len(platform.seen) == 1
    assert recorder.sleeps == []


async def test_transfer_token_not_retried_after_timeout(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client, platform = make_client(reply(200), request_timeout=0.05)
    platform.script[:] = [platform.hang(), reply(200, {"customerSession": "s"})]
    with pytest.raises(PlatformUnavailable, match="timed out"):
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert len(platform.seen) == 1
    assert recorder.statuses == ["timeout"]


async def test_transfer_token_retried_after_429(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client, platform = make_client(
        reply(429, b"", {"Retry-After": "1"}), reply(200, {"customerSession": "s"})
    )
    assert await client.exchange_transfer_token(TRANSFER_TOKEN) == "s"
    assert len(platform.seen) == 2
    assert recorder.sleeps == [1.0]


class _RaisingSession:
    """Stands in for a ClientSession whose attempts fail with scripted aiohttp exceptions.

    Used only for failures a loopback server cannot produce on demand (a connect timeout).
    """

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def get(self, url: Any, **kwargs: Any) -> _RaisingSession:
        self.calls += 1
        return self

    async def __aenter__(self) -> Any:
        raise self.failures.pop(0)

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("failure", "attempts", "status"),
    [
        pytest.param(aiohttp.ConnectionTimeoutError("slow"), 3, "timeout", id="connect-timeout"),
        pytest.param(aiohttp.SocketTimeoutError("slow"), 1, "timeout", id="read-timeout"),
        pytest.param(TimeoutError(), 1, "timeout", id="total-timeout"),
        pytest.param(aiohttp.ServerDisconnectedError(), 1, "connection_error", id="disconnect"),
        pytest.param(aiohttp.ClientPayloadError("cut"), 1, "connection_error", id="payload"),
    ],
)
async def test_transfer_token_retried_only_when_surely_unsent(
    recorder: Recorder, failure: BaseException, attempts: int, status: str
) -> None:
    session = _RaisingSession(*[failure] * 3)
    client = PlenigoClient(
        session,  # type: ignore[arg-type]
        settings(1, max_retries=2),
        sleep=recorder.sleep,
        observer=recorder.observe,
    )
    with pytest.raises(PlatformUnavailable):
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert session.calls == attempts
    assert recorder.statuses == [status] * attempts


async def test_replayable_calls_retry_every_transport_failure(recorder: Recorder) -> None:
    failures = [aiohttp.ServerDisconnectedError(), aiohttp.SocketTimeoutError("x")]
    session = _RaisingSession(*failures, aiohttp.ClientOSError("reset"))
    client = PlenigoClient(
        session,  # type: ignore[arg-type]
        settings(1, max_retries=2),
        sleep=recorder.sleep,
        observer=recorder.observe,
    )
    with pytest.raises(PlatformUnavailable):
        await client.check_access("1", ["a"])
    assert recorder.statuses == ["connection_error", "timeout", "connection_error"]


async def test_cancellation_propagates(make_client: MakeClient) -> None:
    client, platform = make_client(reply(200))
    platform.script[:] = [platform.hang()]
    task = asyncio.create_task(client.customer_for_session(SESSION_TOKEN))
    await platform.arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        pytest.param([error(401, 20028)], id="401"),
        pytest.param([error(401, 99015, API_TOKEN)], id="401-api-token"),
        pytest.param([error(412, 99000, TRANSFER_TOKEN)], id="412"),
        pytest.param([reply(500, {"echo": SESSION_TOKEN})], id="500"),
        pytest.param([reply(200, b"{" + SESSION_TOKEN.encode())], id="malformed"),
        pytest.param([reply(200, {"customerSession": [SESSION_TOKEN]})], id="schema"),
        pytest.param([reply(200, {"customerId": [SESSION_TOKEN]})], id="schema-validate"),
        pytest.param([reply(429, b"", {"Retry-After": "99"})], id="429"),
        pytest.param("hang", id="timeout"),
    ],
)
async def test_tokens_never_in_errors_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, script: Any
) -> None:
    # Only the hanging platform needs a short timeout; a real reply must arrive within it, on
    # a loaded machine too, or the error under test would be a timeout instead.
    timeout = 0.05 if script == "hang" else 2.0
    client, platform = make_client(reply(200), request_timeout=timeout)
    platform.script[:] = [platform.hang()] if script == "hang" else script
    caplog.set_level(logging.DEBUG)
    for call in (
        lambda: client.customer_for_session(SESSION_TOKEN),
        lambda: client.exchange_transfer_token(TRANSFER_TOKEN),
    ):
        with pytest.raises(PlatformError) as caught:
            await call()
        exc: BaseException | None = caught.value
        while exc is not None:  # the whole chain, as a traceback would print it
            for secret in (API_TOKEN, SESSION_TOKEN, TRANSFER_TOKEN):
                assert secret not in str(exc)
                assert secret not in repr(exc)
            exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "retry" in ours or script != "hang"  # the client did log something
    for secret in (API_TOKEN, SESSION_TOKEN, TRANSFER_TOKEN):
        assert secret not in ours


async def test_connection_refused_leaks_nothing(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = PlenigoClient(http, settings(unused_port(), max_retries=1), sleep=Recorder().sleep)
    with pytest.raises(PlatformUnavailable) as caught:
        await client.customer_for_session(SESSION_TOKEN)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    assert ours
    assert not any(SESSION_TOKEN in message for message in ours)
    assert SESSION_TOKEN not in str(caught.value)


# -- round trips against the simulator ----------------------------------------------------
# Wednesday 2025-06-11, 12:00 in Berlin: inside the 06-18 window, outside 22-04.
SANDBOX_NOW = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)
SANDBOX_TOKEN = "sandbox-api-token"
SEED_FILE = REPO_ROOT / "gateway" / "resources" / "sandbox-data.json"
ALL_RIGHTS = ["premium", "archive", "daily-window", "night-owl"]


@dataclass
class MovableClock:
    now: datetime = SANDBOX_NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sandbox:
    client: PlenigoClient
    server: TestServer
    clock: MovableClock
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any) -> Any:
        """A raw set-up call (session / transfer-token creation), outside the client."""
        url = self.server.make_url(f"/api/v3.0{path}")
        headers = {"X-plenigo-token": SANDBOX_TOKEN}
        async with self.http.post(url, json=body, headers=headers) as response:
            assert response.status in (200, 202), await response.text()
            return await response.json()

    async def transfer_token(self, customer_id: str) -> str:
        session = await self.post(f"/sessions/{customer_id}", {})
        created = await self.post(
            "/sessions/transferToken", {"customerSession": session["customerSession"]}
        )
        token: str = created["transferToken"]
        return token


@pytest.fixture(scope="module")
def seed_data() -> SandboxData:
    return load_data(SEED_FILE, SANDBOX_NOW)


@pytest.fixture
def start_sandbox(
    aiohttp_server: Any,
    http: aiohttp.ClientSession,
    recorder: Recorder,
    seed_data: SandboxData,
) -> Callable[..., Awaitable[Sandbox]]:
    async def start(
        options: SandboxOptions | None = None,
        *,
        api_token: str = SANDBOX_TOKEN,
        rng: random.Random | None = None,
        **overrides: Any,
    ) -> Sandbox:
        clock = MovableClock()
        app = create_app(
            seed_data, options or SandboxOptions(api_token=SANDBOX_TOKEN), clock=clock, rng=rng
        )
        server = await aiohttp_server(app)
        client = PlenigoClient(
            http,
            settings(server.port, api_token=SecretStr(api_token), **overrides),
            clock=clock,
            sleep=recorder.sleep,
            observer=recorder.observe,
        )
        return Sandbox(client, server, clock, http)

    return start


StartSandbox = Callable[..., Awaitable[Sandbox]]


def _seeded_sessions() -> list[Any]:
    """Every fixed session token in the seed file, with its customer and whether it expired."""
    seed = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    return [
        pytest.param(
            session["token"],
            customer["customerId"],
            str(session.get("expires", "+")).startswith("-"),
            id=session["token"],
        )
        for customer in seed["customers"]
        for session in customer.get("sessions", [])
    ]


@pytest.mark.parametrize(("token", "customer_id", "expired"), _seeded_sessions())
async def test_sandbox_validates_seeded_sessions(
    start_sandbox: StartSandbox, token: str, customer_id: str, expired: bool
) -> None:
    sandbox = await start_sandbox()
    if expired:
        with pytest.raises(InvalidSession):
            await sandbox.client.customer_for_session(token)
    else:
        assert await sandbox.client.customer_for_session(token) == customer_id


async def test_sandbox_unknown_session(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox()
    with pytest.raises(InvalidSession):
        await sandbox.client.customer_for_session("no-such-session")


async def test_sandbox_transfer_token_round_trip(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox()
    token = await sandbox.transfer_token("100002")
    session = await sandbox.client.exchange_transfer_token(token)
    assert await sandbox.client.customer_for_session(session) == "100002"
    with pytest.raises(InvalidTransferToken):  # one-time
        await sandbox.client.exchange_transfer_token(token)


async def test_sandbox_transfer_token_expires(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox()
    token = await sandbox.transfer_token("100001")
    sandbox.clock.now += timedelta(seconds=31)
    with pytest.raises(InvalidTransferToken):
        await sandbox.client.exchange_transfer_token(token)


@pytest.mark.parametrize("token", ["unknown-token", "x" * 60])
async def test_sandbox_bad_transfer_tokens(start_sandbox: StartSandbox, token: str) -> None:
    sandbox = await start_sandbox()
    with pytest.raises(InvalidTransferToken):
        await sandbox.client.exchange_transfer_token(token)


def _flags(*items: tuple[str, bool, bool]) -> list[tuple[str, bool, bool]]:
    return sorted(items)


@pytest.mark.parametrize(
    ("customer_id", "blocked", "granted", "items"),
    [
        pytest.param(
            "100001",
            False,
            True,
            _flags(("premium", True, False), ("archive", True, False)),
            id="plain",
        ),
        pytest.param(
            "100002",
            False,
            True,
            _flags(("daily-window", True, False), ("night-owl", False, False)),
            id="windows",
        ),
        pytest.param("100003", False, False, _flags(("premium", False, False)), id="paused"),
        pytest.param("100004", False, False, _flags(("premium", False, True)), id="blocked-item"),
        pytest.param(
            "100005", True, False, _flags(("premium", False, False)), id="blocked-customer"
        ),
        pytest.param("100006", False, False, _flags(("premium", False, False)), id="expired"),
        pytest.param("100007", False, True, _flags(("premium", True, False)), id="short-cache"),
        pytest.param("100008", False, False, _flags(), id="no-rights"),
        pytest.param("100009", False, False, _flags(("premium", False, False)), id="upcoming"),
        pytest.param(
            "100010",
            False,
            True,
            _flags(("premium", False, False), ("premium", True, False)),
            id="renewed",
        ),
        pytest.param("100011", False, True, _flags(("premium", True, False)), id="rolling"),
    ],
)
async def test_sandbox_check_access_per_customer_kind(
    start_sandbox: StartSandbox,
    customer_id: str,
    blocked: bool,
    granted: bool,
    items: list[tuple[str, bool, bool]],
) -> None:
    sandbox = await start_sandbox()
    payload = await sandbox.client.check_access(customer_id, ALL_RIGHTS)
    assert payload.customer_id == customer_id
    assert payload.customer_blocked is blocked
    assert payload.granted is granted
    assert payload.fetched_at == SANDBOX_NOW
    assert sorted((i.access_right_id, i.granted, i.blocked) for i in payload.items) == items


async def test_sandbox_item_details_survive_the_trip(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox()
    windows = await sandbox.client.check_access("100002", ["daily-window"])
    assert windows.items == (
        AccessItem(
            access_right_id="daily-window",
            granted=True,
            lifetime_start=SANDBOX_NOW - timedelta(days=30),
            lifetime_end=SANDBOX_NOW + timedelta(days=335),
            window_start=time(6),
            window_end=time(18),
        ),
    )
    (paused,) = (await sandbox.client.check_access("100003", ["premium"])).items
    assert paused.pause_start == SANDBOX_NOW - timedelta(days=1)
    assert paused.pause_end == SANDBOX_NOW + timedelta(days=7)
    (short,) = (await sandbox.client.check_access("100007", ["premium"])).items
    assert short.max_cache_date == SANDBOX_NOW + timedelta(minutes=2)
    (upcoming,) = (await sandbox.client.check_access("100009", ["premium"])).items
    assert upcoming.lifetime_start == SANDBOX_NOW + timedelta(hours=1)


async def test_sandbox_unknown_customer(start_sandbox: StartSandbox) -> None:
    sandbox = await start_sandbox()
    with pytest.raises(UnknownCustomer):
        await sandbox.client.check_access("999999", ["premium"])


async def test_sandbox_wrong_api_token(start_sandbox: StartSandbox, recorder: Recorder) -> None:
    sandbox = await start_sandbox(api_token="not-the-token")
    with pytest.raises(PlatformAuthError):
        await sandbox.client.customer_for_session("demo-session-plain")
    with pytest.raises(PlatformAuthError):
        await sandbox.client.exchange_transfer_token("whatever")
    with pytest.raises(PlatformAuthError):
        await sandbox.client.check_access("100001", ["premium"])
    assert recorder.statuses == ["401"] * 3  # never retried


async def test_sandbox_rate_limit_retries_then_gives_up(
    start_sandbox: StartSandbox, recorder: Recorder
) -> None:
    options = SandboxOptions(api_token=SANDBOX_TOKEN, rate_limit_rate=1.0, retry_after=1)
    sandbox = await start_sandbox(options, max_retries=2, max_retry_after=2.0)
    with pytest.raises(RateLimited) as caught:
        await sandbox.client.check_access("100001", ["premium"])
    assert caught.value.retry_after == 1.0
    assert recorder.statuses == ["429"] * 3
    assert recorder.sleeps == [1.0, 1.0]


async def test_sandbox_long_retry_after_fails_fast(
    start_sandbox: StartSandbox, recorder: Recorder
) -> None:
    options = SandboxOptions(api_token=SANDBOX_TOKEN, rate_limit_rate=1.0, retry_after=30)
    sandbox = await start_sandbox(options, max_retry_after=2.0)
    with pytest.raises(RateLimited) as caught:
        await sandbox.client.customer_for_session("demo-session-plain")
    assert caught.value.retry_after == 30.0
    assert recorder.statuses == ["429"]
    assert recorder.sleeps == []


async def test_sandbox_injected_errors_are_retried_away(
    start_sandbox: StartSandbox, recorder: Recorder
) -> None:
    options = SandboxOptions(api_token=SANDBOX_TOKEN, error_rate=0.3, rate_limit_rate=0.2)
    sandbox = await start_sandbox(options, rng=random.Random(20250611), max_retries=10)
    for _ in range(20):
        payload = await sandbox.client.check_access("100001", ["premium"])
        assert payload.granted
    assert "500" in recorder.statuses
    assert "429" in recorder.statuses
    assert recorder.statuses.count("200") == 20
