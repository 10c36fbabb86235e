"""POST /_paywall/callbacks/{secret} on the aiohttp gateway, with the platform simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import time
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from gateway.sandbox.app import STATE
from gateway.sandbox.model import AccessRightItem
from tests.callbacks.conftest import SEED
from tests.conftest import free_port, require_binary
from tests.web.conftest import Stack, StartStack

SECRET = "cb-secret-0123456789abcdef"
JSON_TYPE = {"Content-Type": "application/json"}


async def start(start_stack: StartStack, **sections: Any) -> Stack:
    sections.setdefault("callbacks", {"secret": SECRET})
    return await start_stack(**sections)


async def post(
    stack: Stack,
    body: bytes | dict[str, Any],
    *,
    secret: str | None = SECRET,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    path = "/_paywall/callbacks" + (f"/{secret}" if secret is not None else "")
    response = await stack.http.post(
        stack.url(path), data=data, headers=JSON_TYPE if headers is None else headers
    )
    await response.read()
    return response


def callbacks(stack: Stack, result: str, entity: str = "none", kind: str = "none") -> float:
    labels = {"entity_type": entity, "callback_type": kind, "result": result}
    return stack.metrics.value("paywall_callbacks_total", labels)


def invalidations(stack: Stack) -> float:
    return stack.metrics.value("paywall_invalidations_total", {"source": "callback"})


def subscription(customer_id: str, kind: str = "CREATION") -> dict[str, Any]:
    return {
        "entityType": "SUBSCRIPTION",
        "callbackType": kind,
        "entityId": "1230116",
        "entity": {"invoiceCustomerId": customer_id, "deliveryCustomerId": customer_id},
    }


COOKIE = "paywall_session"


async def test_every_seed_example_is_answered_as_documented(start_stack: StartStack) -> None:
    stack = await start(start_stack)
    for example in SEED["valid"]:
        before = invalidations(stack)
        response = await post(stack, example["body"])
        assert response.status == 200, example["name"]
        assert (await response.json())["result"] == example["result"]
        assert invalidations(stack) - before == len(example["customers"])
        labels = (example["entityType"], example["callbackType"])
        assert callbacks(stack, example["result"], *labels) == 1
    for example in SEED["invalid"]:
        response = await post(stack, example["raw"].encode())
        assert response.status == 400, example["name"]
        assert "not valid JSON" in (await response.json())["message"]
    assert callbacks(stack, "bad_request") == 2


async def test_secret_in_path_or_header(start_stack: StartStack) -> None:
    stack = await start(start_stack)
    ok = await post(stack, subscription("100001"))
    assert ok.status == 200
    header = await post(
        stack,
        subscription("100001"),
        secret=None,
        headers={**JSON_TYPE, "X-Paywall-Callback-Secret": SECRET},
    )
    assert header.status == 200
    assert invalidations(stack) == 2


@pytest.mark.parametrize(
    ("secret", "header"),
    [
        ("wrong-secret-0123456789abcdef", None),
        (SECRET[:-1], None),
        (SECRET + "x", None),
        (None, "wrong-secret-0123456789abcdef"),
        (None, None),
        (SECRET, "wrong-secret-0123456789abcdef"),  # both given: both must match
    ],
)
async def test_a_wrong_secret_is_a_404_and_invalidates_nothing(
    start_stack: StartStack, secret: str | None, header: str | None
) -> None:
    stack = await start(start_stack)
    unknown = await stack.http.post(stack.url("/_paywall/nothing-here"))
    headers = dict(JSON_TYPE)
    if header is not None:
        headers["X-Paywall-Callback-Secret"] = header
    response = await post(stack, subscription("100001"), secret=secret, headers=headers)
    assert response.status == 404
    assert await response.read() == await unknown.read()
    assert invalidations(stack) == 0
    assert callbacks(stack, "bad_secret") == 1


async def test_no_secret_configured_means_no_endpoint(start_stack: StartStack) -> None:
    stack = await start(start_stack, callbacks={})
    response = await post(stack, subscription("100001"), secret="")
    assert response.status == 404
    response = await post(
        stack,
        subscription("100001"),
        secret=None,
        headers={**JSON_TYPE, "X-Paywall-Callback-Secret": ""},
    )
    assert response.status == 404
    assert invalidations(stack) == 0


async def test_size_type_and_method(start_stack: StartStack) -> None:
    stack = await start(start_stack, callbacks={"secret": SECRET, "max_body": 1024})
    big = json.dumps({**subscription("100001"), "pad": "x" * 2000}).encode()
    assert (await post(stack, big)).status == 413

    # Without a Content-Length (chunked): still refused, after reading at most the limit.
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1000

    url = stack.url(f"/_paywall/callbacks/{SECRET}")
    async with stack.http.post(url, data=chunks(), headers=JSON_TYPE) as response:
        assert response.status == 413
    text = await post(stack, b"{}", headers={"Content-Type": "text/plain"})
    assert text.status == 415
    none = await post(stack, b"{}", headers={})
    assert none.status == 415
    get = await stack.http.get(url)
    assert get.status == 405
    assert get.headers["Allow"] == "POST"
    assert invalidations(stack) == 0
    assert callbacks(stack, "too_large") == 2
    assert callbacks(stack, "unsupported_media_type") == 2


async def test_unknown_types_are_accepted_and_ignored(start_stack: StartStack) -> None:
    stack = await start(start_stack)
    body = {"entityType": "NEWSLETTER", "callbackType": "SENT", "entityId": "1", "entity": {}}
    response = await post(stack, {**body, "entity": {"customerId": "100001"}})
    assert response.status == 202
    response = await post(stack, {**subscription("100001"), "callbackType": "PAUSED"})
    assert response.status == 202
    assert invalidations(stack) == 0
    assert callbacks(stack, "ignored", "other", "other") == 1
    assert callbacks(stack, "ignored", "SUBSCRIPTION", "other") == 1


async def test_a_callback_naming_nobody_is_acknowledged_and_counted(
    start_stack: StartStack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start(start_stack)
    caplog.set_level(logging.WARNING, "gateway.callbacks")
    response = await post(stack, {**subscription(""), "entity": {"status": "ACTIVE"}})
    assert response.status == 202
    assert (await response.json())["result"] == "no_customer"
    assert invalidations(stack) == 0
    assert callbacks(stack, "no_customer", "SUBSCRIPTION", "CREATION") == 1
    assert "names no customer" in caplog.text


async def test_allowed_networks(start_stack: StartStack) -> None:
    stack = await start(
        start_stack, callbacks={"secret": SECRET, "allowed_networks": ["10.0.0.0/8"]}
    )
    response = await post(stack, subscription("100001"))
    assert response.status == 404
    assert callbacks(stack, "forbidden_network") == 1
    # Behind a trusted proxy (loopback) the forwarded client address is what counts.
    headers = {**JSON_TYPE, "X-Forwarded-For": "10.1.2.3"}
    assert (await post(stack, subscription("100001"), headers=headers)).status == 200
    assert invalidations(stack) == 1


async def test_a_purchase_opens_the_paywall_at_once(start_stack: StartStack) -> None:
    stack = await start(start_stack)
    cookies = {COOKIE: "demo-session-no-rights"}  # customer 100008
    assert (await stack.get("/premium/a", cookies=cookies)).status == 403
    state = stack.platform.app[STATE]
    now = stack.clock()
    state.data.customers["100008"].items.append(
        AccessRightItem("premium", state.data.next_item_id(), life_time_start=now - timedelta(1))
    )
    assert (await stack.get("/premium/a", cookies=cookies)).status == 403  # the cached denial
    assert (await post(stack, subscription("100008"))).status == 200
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200


async def test_customer_deletion_ends_the_cached_session(start_stack: StartStack) -> None:
    stack = await start(start_stack)
    cookies = {COOKIE: "demo-session-plain"}  # customer 100001
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200
    state = stack.platform.app[STATE]
    del state.data.customers["100001"]
    for token in [t for t, s in state.data.sessions.items() if s.customer_id == "100001"]:
        del state.data.sessions[token]
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200  # all cached
    deletion = {
        "entityType": "CUSTOMER",
        "callbackType": "DELETION",
        "entityId": "100001",
        "entity": None,
    }
    assert (await post(stack, deletion)).status == 200
    response = await stack.get("/premium/a", cookies=cookies)
    # Unauthenticated (the session), not merely denied (the access answer): login redirect.
    assert response.status == 303
    assert response.headers["Location"].startswith("https://login.example/sso")


async def test_customer_change_without_deletion_keeps_the_visitor_in(
    start_stack: StartStack,
) -> None:
    stack = await start(start_stack)
    cookies = {COOKIE: "demo-session-plain"}
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200
    calls = stack.platform_calls("validate_session")
    change = {"entityType": "CUSTOMER", "callbackType": "CHANGE", "entityId": 100001, "entity": {}}
    assert (await post(stack, change)).status == 200
    assert (await stack.get("/premium/a", cookies=cookies)).status == 200
    assert stack.platform_calls("validate_session") == calls + 1  # validated again: still valid


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = require_binary("redis-server", "redis-server")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise AssertionError("redis-server did not start")


async def test_redis_down_is_a_503_and_the_retry_succeeds(start_stack: StartStack) -> None:
    port = free_port()
    stack = await start(
        start_stack, cache={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_timeout": 0.5}
    )
    response = await post(stack, subscription("100001"))
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert callbacks(stack, "unavailable", "SUBSCRIPTION", "CREATION") == 1
    assert invalidations(stack) == 0
    proc = start_redis(port)
    try:
        for _ in range(50):  # the client reconnects on its own schedule
            response = await post(stack, subscription("100001"))
            if response.status != 503:
                break
            await asyncio.sleep(0.1)
        assert response.status == 200
        assert invalidations(stack) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
