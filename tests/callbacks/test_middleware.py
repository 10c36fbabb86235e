"""The callback endpoint in the ASGI and WSGI middleware (in-process, no server): the same
receiver as the aiohttp driver; the app never sees the request."""

from __future__ import annotations

import io
import json
from typing import Any

from gateway.asgi import PaywallMiddleware as AsgiMiddleware
from gateway.config import Settings
from gateway.wsgi import PaywallMiddleware as WsgiMiddleware

SECRET = "mw-secret-0123456789abcdef"
BODY = json.dumps(
    {
        "entityType": "ORDER",
        "callbackType": "CREATION",
        "entityId": "9",
        "entity": {"invoiceCustomerId": 42},
    }
).encode()


def settings(**callbacks: Any) -> Settings:
    return Settings(
        platform={"base_url": "http://127.0.0.1:9/api/v3.0", "max_retries": 0},
        callbacks={"secret": SECRET, "max_body": 1024, **callbacks},
        routes=[{"path": "/**", "public": True}],
    )


def invalidations(metrics: Any) -> float:
    return float(metrics.value("paywall_invalidations_total", {"source": "callback"}))


async def asgi_post(mw: AsgiMiddleware, path: str, body: bytes, chunk: int = 300) -> int:
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gw")],
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
    }
    await mw(scope, receive, send)
    return int(sent[0]["status"])


async def test_asgi_receives_callbacks() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see a callback")

    mw = AsgiMiddleware(app, settings())
    try:
        assert await asgi_post(mw, f"/_paywall/callbacks/{SECRET}", BODY) == 200
        assert invalidations(mw.metrics) == 1
        assert await asgi_post(mw, "/_paywall/callbacks/wrong-0123456789abcdef", BODY) == 404
        assert await asgi_post(mw, f"/_paywall/callbacks/{SECRET}", b" " * 5000) == 413
        assert await asgi_post(mw, f"/_paywall/callbacks/{SECRET}", b"{") == 400
        assert invalidations(mw.metrics) == 1
    finally:
        await mw.aclose()


def wsgi_post(mw: WsgiMiddleware, path: str, body: bytes) -> int:
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "gw",
    }
    b"".join(mw(environ, lambda status, headers, exc=None: statuses.append(status)))
    return int(statuses[0].split()[0])


def test_wsgi_receives_callbacks() -> None:
    def app(environ: Any, start_response: Any) -> Any:
        raise AssertionError("the app must not see a callback")

    mw = WsgiMiddleware(app, settings())
    try:
        assert wsgi_post(mw, f"/_paywall/callbacks/{SECRET}", BODY) == 200
        assert invalidations(mw.metrics) == 1
        assert wsgi_post(mw, "/_paywall/callbacks/wrong-0123456789abcdef", BODY) == 404
        assert wsgi_post(mw, f"/_paywall/callbacks/{SECRET}", b" " * 5000) == 413
        assert wsgi_post(mw, f"/_paywall/callbacks/{SECRET}", b'{"a":1,"a":2}') == 400
        assert invalidations(mw.metrics) == 1
    finally:
        mw.close()
