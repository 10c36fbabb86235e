"""Operators' invalidation on the admin listener: ``POST /invalidate`` (never on the public
listener), through the access service, so it reaches the shared tier and every process."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from gateway.web.admin import create_admin_app
from gateway.web.app import METRICS
from tests.conftest import free_port
from tests.web.conftest import API_TOKEN, Stack, StartStack
from tests.web.test_app_redis import PLAIN
from tests.web.test_invalidation import _two_gateways, _until_asked

NO_RIGHTS = {"Cookie": "paywall_session=demo-session-no-rights"}
GRANT = {
    "accessRightUniqueId": "premium",
    "lifeTimeStart": "2025-01-01T00:00:00Z",
    "lifeTimeEnd": None,
    "blocked": False,
}


async def _admin(stack: Stack, aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_admin_app(stack.gateway.app))
    return server


async def _post(
    stack: Stack, admin: TestServer, body: Any = None, *, data: bytes | None = None, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    kwargs: dict[str, Any] = {"data": data, **kw} if data is not None else {"json": body, **kw}
    async with stack.http.post(admin.make_url("/invalidate"), **kwargs) as response:
        payload = await response.json() if response.content_type == "application/json" else None
        return response.status, payload, response


async def _grant_premium(stack: Stack, customer: str) -> None:
    url = stack.platform.make_url(f"/api/v3.0/accessRights/{customer}")
    headers = {"X-plenigo-token": API_TOKEN}
    async with stack.http.post(url, json=GRANT, headers=headers) as response:
        assert response.status == 201, await response.text()


@pytest.mark.parametrize("shared", [False, True], ids=["l1-only", "redis"])
async def test_customer_a_cached_denial_is_asked_again_after_the_purchase(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str, shared: bool
) -> None:
    if shared:
        client = redis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
    # No refresh-ahead: only the invalidation may make the gateway ask again.
    cache: dict[str, Any] = {"refresh_ahead": 0}
    if shared:
        cache.update(redis_url=redis_url, redis_timeout=1.0)
    stack = await start_stack(cache=cache)
    admin = await _admin(stack, aiohttp_server)
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 403
    await _grant_premium(stack, "100008")  # "I just paid"
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 403  # cached
    assert stack.platform_calls("has_access") == 1
    assert stack.platform_calls("validate_session") == 1

    status, payload, response = await _post(stack, admin, {"customer": "100008"})
    assert status == 200, payload
    assert payload == {"invalidated": {"customer": "100008", "sessions": True}}
    assert response.headers["Cache-Control"] == "no-store"
    assert (await stack.get("/premium/story", headers=NO_RIGHTS)).status == 200
    assert stack.platform_calls("has_access") == 2
    assert stack.platform_calls("validate_session") == 2  # the customer's sessions too
    labels = {"source": "admin"}
    assert stack.metrics.value("paywall_invalidations_total", labels) == 1


async def test_customer_reaches_a_second_gateway_on_the_same_redis(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    admin = await _admin(stack, aiohttp_server)
    status, _, _ = await _post(stack, admin, {"customer": "100001"})
    assert status == 200
    await _until_asked(stack, other, metrics, "has_access")


@pytest.mark.parametrize(
    "body",
    [
        {"session": "demo-session-plain"},
        {"session_hash": hashlib.sha256(b"demo-session-plain").hexdigest().upper()},
    ],
    ids=["token", "hash"],
)
async def test_session_reaches_every_gateway_and_the_token_is_never_logged(
    start_stack: StartStack,
    aiohttp_server: Any,
    redis_url: str,
    body: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    admin = await _admin(stack, aiohttp_server)
    with caplog.at_level(logging.DEBUG):
        status, payload, _ = await _post(stack, admin, body)
    assert (status, payload) == (200, {"invalidated": {"session": True}})
    await _until_asked(stack, other, metrics, "validate_session")
    assert (
        metrics.value(
            "paywall_platform_requests_total", {"endpoint": "has_access", "status": "200"}
        )
        == 0
    )  # the customer's access answers are untouched
    digest = hashlib.sha256(b"demo-session-plain").hexdigest()
    assert "demo-session-plain" not in caplog.text
    assert digest not in caplog.text.lower()


async def test_all_reaches_every_gateway(
    start_stack: StartStack, aiohttp_server: Any, redis_url: str
) -> None:
    stack, other, metrics = await _two_gateways(start_stack, aiohttp_server, redis_url)
    admin = await _admin(stack, aiohttp_server)
    status, payload, _ = await _post(stack, admin, {"all": True})
    assert (status, payload) == (200, {"invalidated": {"all": True}})
    await _until_asked(stack, other, metrics, "has_access")
    assert (await stack.get("/premium/story", headers=PLAIN)).status == 200
    assert stack.metrics.value("paywall_invalidations_total", {"source": "admin"}) == 1


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"json": {}}, "exactly one"),
        ({"json": {"customer": "100001", "all": True}}, "exactly one"),
        ({"json": {"customer": 100001}}, "customer must be"),
        ({"json": {"customer": "10000a"}}, "customer must be"),
        ({"json": {"customer": "1" * 19}}, "customer must be"),
        ({"json": {"session": ""}}, "session must be"),
        ({"json": {"session": "has space"}}, "session must be"),
        ({"json": {"session": "x" * 4097}}, "session must be"),
        ({"json": {"session": None}}, "session must be"),
        ({"json": {"session_hash": "ab" * 31}}, "session_hash must be"),
        ({"json": {"all": 1}}, "all must be true"),
        ({"json": {"all": False}}, "all must be true"),
        ({"json": {"everything": True}}, "unknown key"),
        ({"json": ["customer", "100001"]}, "JSON object"),
        ({"json": "100001"}, "JSON object"),
        ({"data": b'{"customer": "100001"', "headers": {"Content-Type": "application/json"}},
         "not valid JSON"),
        ({"data": b'{"customer": "1", "customer": "2"}',
          "headers": {"Content-Type": "application/json"}}, "duplicate key"),
        ({"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, "not valid JSON"),
        ({"data": b'{"all": true}', "headers": {"Content-Type": "text/plain"}}, "content type"),
        ({"data": b"customer=100001"}, "content type"),
        ({"data": b'{"session": "' + b"x" * 9000 + b'"}',
          "headers": {"Content-Type": "application/json"}}, "too large"),
    ],
)  # fmt: skip
async def test_anything_else_is_400_with_a_short_reason_and_invalidates_nothing(
    start_stack: StartStack, aiohttp_server: Any, kwargs: dict[str, Any], reason: str
) -> None:
    stack = await start_stack()
    admin = await _admin(stack, aiohttp_server)
    async with stack.http.post(admin.make_url("/invalidate"), **kwargs) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert reason in error
    assert len(error) < 100
    assert stack.metrics.value("paywall_invalidations_total", {"source": "admin"}) == 0


async def test_other_methods_are_405(start_stack: StartStack, aiohttp_server: Any) -> None:
    stack = await start_stack()
    admin = await _admin(stack, aiohttp_server)
    for method in ("GET", "PUT", "DELETE"):
        async with stack.http.request(method, admin.make_url("/invalidate")) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"


async def test_503_before_the_runtime_started(aiohttp_server: Any) -> None:
    from aiohttp import web

    from gateway.metrics import Metrics

    main = web.Application()
    main[METRICS] = Metrics()
    admin = await aiohttp_server(create_admin_app(main))
    async with aiohttp.ClientSession() as http:
        async with http.post(admin.make_url("/invalidate"), json={"all": True}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["error"] == "starting"
        # Validation comes first: a bad body is 400 even then.
        async with http.post(admin.make_url("/invalidate"), json={"all": 0}) as response:
            assert response.status == 400


async def test_503_when_redis_is_configured_but_unreachable(
    start_stack: StartStack, aiohttp_server: Any
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    stack = await start_stack(cache={"redis_url": url, "redis_timeout": 0.2})
    admin = await _admin(stack, aiohttp_server)
    for body in ({"customer": "100001"}, {"session": "demo-session-plain"}, {"all": True}):
        status, payload, response = await _post(stack, admin, body)
        assert status == 503, payload
        assert response.headers["Retry-After"] == "5"
    assert stack.metrics.value("paywall_invalidations_total", {"source": "admin"}) == 0


async def _granted(stack: Stack, mode: str) -> bool:
    if mode == "proxy":
        return (await stack.get("/premium/story", headers=PLAIN)).status == 200
    headers = {**PLAIN, "X-Original-URI": "/premium/story", "X-Original-Method": "GET"}
    return (await stack.get("/_paywall/auth", headers=headers)).status == 200


@pytest.mark.parametrize("mode", ["proxy", "auth_request"])
async def test_never_on_the_public_listener(
    start_stack: StartStack, aiohttp_server: Any, mode: str
) -> None:
    stack = await start_stack(server={"mode": mode})
    await _admin(stack, aiohttp_server)  # the admin listener runs next to it
    assert await _granted(stack, mode)
    paths = ["/_paywall/invalidate", "/_paywall/admin/invalidate"]
    if mode == "auth_request":
        paths.append("/invalidate")
    for path in paths:
        for body in ({"all": True}, {"customer": "100001"}):
            async with stack.http.post(stack.url(path), json=body) as response:
                assert response.status == 404, path
    if mode == "proxy":
        # /invalidate on the public port is the site's own path, decided by the route table
        # like any other (no rule lets a POST there pass): never the admin handler.
        async with stack.http.post(stack.url("/invalidate"), json={"all": True}) as response:
            assert response.status == 403
    assert stack.metrics.value("paywall_invalidations_total", {"source": "admin"}) == 0
    assert await _granted(stack, mode)
    assert stack.platform_calls("has_access") == 1  # still answered from the cache
