"""The listener without aiohttp's router (GatewayRunner + the driver's direct handler): what the
application did before calling a handler, the driver now does itself. Raw sockets, so the
interim ``100 Continue`` is seen as sent."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import Settings
from gateway.web.app import create_app
from tests.web.conftest import StartStack

SECRET = "direct-handler-secret-0123456789"
BODY = b'{"entityType": "INVOICE", "callbackType": "CREATION", "entityId": "1", "entity": {}}'


async def exchange(port: int, head: bytes, body: bytes = b"", *, wait_continue: bool) -> bytes:
    """Send ``head``; with ``wait_continue`` read the interim answer before sending ``body``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        seen = b""
        if wait_continue:
            async with asyncio.timeout(2):
                seen = await reader.readuntil(b"\r\n\r\n")
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(5):
            rest = await reader.read(65536)
        return seen + rest
    finally:
        writer.close()


def callback_head(port: int, expect: str | None, version: str = "1.1") -> bytes:
    lines = [
        f"POST /_paywall/callbacks/{SECRET} HTTP/{version}",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(BODY)}",
        "Connection: close",
    ]
    if expect is not None:
        lines.append(f"Expect: {expect}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_expect_100_continue_gets_the_interim_answer_before_the_body(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(callbacks={"secret": SECRET})
    port = stack.gateway.port
    assert port is not None
    answer = await exchange(port, callback_head(port, "100-continue"), BODY, wait_continue=True)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 100") == 1


async def test_an_unknown_expectation_is_refused_with_417_and_the_body_is_not_read(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(callbacks={"secret": SECRET})
    port = stack.gateway.port
    assert port is not None
    answer = await exchange(port, callback_head(port, "something-else"), wait_continue=False)
    assert answer.startswith(b"HTTP/1.1 417 ")
    assert stack.metrics.value("paywall_callbacks_total", {"result": "no_access_change"}) == 0


async def test_http_1_0_ignores_expect_and_without_it_nothing_changes(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(callbacks={"secret": SECRET})
    port = stack.gateway.port
    assert port is not None
    for head in (callback_head(port, "100-continue", "1.0"), callback_head(port, None)):
        answer = await exchange(port, head, BODY, wait_continue=False)
        assert b" 100 " not in answer.split(b"\r\n", 1)[0]
        assert answer.split(b"\r\n", 1)[0].endswith(b" 200 OK")


async def test_through_aiohttp_s_router_the_interim_answer_is_sent_once_too(
    aiohttp_server: Any,
) -> None:
    """The app under a plain AppRunner (a test server, an embedding): the catch-all route's
    expect handler leaves Expect to the driver, so ``100 Continue`` is sent exactly once."""
    settings = Settings(
        platform={"base_url": "http://127.0.0.1:9/api/v3.0", "api_token": "t"},
        server={"mode": "auth_request", "cookie_secure": False},
        callbacks={"secret": SECRET},
        routes=[{"path": "/**", "public": True}],
    )
    server = await aiohttp_server(create_app(settings))
    port = server.port
    answer = await exchange(port, callback_head(port, "100-continue"), BODY, wait_continue=True)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 100") == 1
    refused = await exchange(port, callback_head(port, "something-else"), wait_continue=False)
    assert refused.startswith(b"HTTP/1.1 417 ")
