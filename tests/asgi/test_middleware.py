"""PaywallMiddleware called in-process, as a server would: the lifespan protocol, the scope the
app gets, Cache-Control of paid content, websocket refusals, and the server's state left alone.

The app is a tiny raw ASGI app that records what it saw; the platform is the simulator on
loopback (the middleware's runtime talks to it over HTTP, as in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp.test_utils import TestServer
from starlette.applications import Starlette
from starlette.requests import Request

import gateway.asgi
from gateway.asgi import VIEW_GATE, PaywallMiddleware, ViewGate
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.fastapi import require_access
from gateway.http.steps import Decision
from tests.asgi.conftest import gateway_config, simulator
from tests.conftest import REPO_ROOT

Message = dict[str, Any]
PLAIN = (b"cookie", b"paywall_session=demo-session-plain")
NO_RIGHTS = (b"cookie", b"paywall_session=demo-session-no-rights")
CONTENT_CACHE_CONTROL = b"public, max-age=60, s-maxage=600"


class RawApp:
    """Records every scope and lifespan event; answers http with two body chunks, websockets
    with accept + the decision."""

    def __init__(self, *, lifespan: str = "yes") -> None:
        self.lifespan = lifespan  # "yes", "ignore" (returns at once), "raise", "fail"
        self.scopes: list[dict[str, Any]] = []
        self.events: list[tuple[str, bool]] = []
        self.middleware: PaywallMiddleware | None = None

    def gateway_running(self) -> bool:
        return self.middleware is not None and self.middleware.runtime is not None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        headers = [(b"content-type", b"text/plain"), (b"cache-control", CONTENT_CACHE_CONTROL)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        if self.lifespan == "ignore":
            return
        if self.lifespan == "raise":
            raise RuntimeError("lifespan not supported")
        while True:
            message = await receive()
            self.events.append((message["type"], self.gateway_running()))
            if message["type"] == "lifespan.startup":
                if self.lifespan == "fail":
                    await send({"type": "lifespan.startup.failed", "message": "app failed"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
async def settings(aiohttp_server: Any) -> Settings:
    platform: TestServer = await aiohttp_server(simulator())
    return Settings(**gateway_config(str(platform.make_url("/api/v3.0"))))


def wrap(app: RawApp, settings: Settings) -> PaywallMiddleware:
    middleware = PaywallMiddleware(app, settings)  # type: ignore[arg-type]
    app.middleware = middleware
    return middleware


@pytest.fixture
async def closing() -> AsyncIterator[list[PaywallMiddleware]]:
    """Middleware to stop at the end of the test (lazily started runtimes)."""
    started: list[PaywallMiddleware] = []
    yield started
    for middleware in started:
        await middleware.aclose()


def http_scope(
    path: bytes = b"/",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: str = "GET",
    kind: str = "http",
    state: dict[str, Any] | None = None,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": unquote(path.decode("latin-1")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"site.example"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": state if state is not None else {},
    }
    if kind == "http":
        scope["method"] = method
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def call(middleware: PaywallMiddleware, scope: dict[str, Any]) -> list[Message]:
    """One request through the middleware; the messages the server got."""
    incoming: list[Message] = (
        [{"type": "websocket.connect"}]
        if scope["type"] == "websocket"
        else [{"type": "http.request", "body": b"", "more_body": False}]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(middleware(scope, receive, send), 10)
    return sent


def header(message: Message, name: bytes) -> bytes | None:
    values = [value for key, value in message["headers"] if key == name]
    assert len(values) <= 1, values
    return values[0] if values else None


class LifespanServer:
    """The server side of one lifespan scope."""

    def __init__(self, middleware: PaywallMiddleware) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.answered = asyncio.Event()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(middleware(scope, self.queue.get, self._send))
        self.task.add_done_callback(lambda _: self.answered.set())

    async def _send(self, message: Message) -> None:
        self.sent.append(message)
        self.answered.set()

    async def event(self, kind: str, count: int) -> list[Message]:
        """Send ``lifespan.<kind>``; wait until the server has ``count`` messages (or the
        lifespan call ended)."""
        self.queue.put_nowait({"type": f"lifespan.{kind}"})
        async with asyncio.timeout(10):
            while len(self.sent) < count and not self.task.done():
                self.answered.clear()
                await self.answered.wait()
        return self.sent


# --- lifespan ----------------------------------------------------------------------------------


async def test_lifespan_starts_the_gateway_before_the_app_and_stops_it_after(
    settings: Settings,
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    server = LifespanServer(middleware)
    assert await server.event("startup", 1) == [{"type": "lifespan.startup.complete"}]
    assert app.events == [("lifespan.startup", True)]  # running before the app's own startup
    ok = await call(middleware, http_scope(b"/premium/a", headers=[PLAIN]))
    assert ok[0]["status"] == 200
    sent = await server.event("shutdown", 2)
    await asyncio.wait_for(server.task, 10)
    assert sent[1] == {"type": "lifespan.shutdown.complete"}
    assert app.events[1] == ("lifespan.shutdown", True)  # still running while the app stops
    assert middleware.runtime is None
    # After shutdown nothing restarts it: a late request is refused, not passed.
    late = await call(middleware, http_scope(b"/"))
    assert late[0]["status"] == 503
    assert len(app.scopes) == 1


@contextlib.asynccontextmanager
async def _broken_runtime(*args: Any) -> AsyncIterator[None]:
    raise ConfigError("boom: the platform client cannot start")
    yield


def _starlette_app(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app started")
        yield

    return Starlette(lifespan=lifespan)


@pytest.mark.parametrize("framework", ["raw", "starlette"])
async def test_startup_failure_is_reported_once_and_the_app_does_not_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    monkeypatch.setattr(gateway.asgi, "open_runtime", _broken_runtime)
    events: list[str] = []
    raw = RawApp()
    app: Any = raw if framework == "raw" else _starlette_app(events)
    middleware = PaywallMiddleware(app, settings)
    server = LifespanServer(middleware)
    sent = await server.event("startup", 1)
    await asyncio.wait_for(server.task, 10)  # ends without raising at the server
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]
    assert "boom: the platform client cannot start" in sent[0]["message"]
    assert events == []
    assert raw.events == []
    assert middleware.runtime is None


async def test_app_startup_failure_stops_the_gateway(settings: Settings) -> None:
    app = RawApp(lifespan="fail")
    middleware = wrap(app, settings)
    server = LifespanServer(middleware)
    sent = await server.event("startup", 1)
    await asyncio.wait_for(server.task, 10)
    assert sent == [{"type": "lifespan.startup.failed", "message": "app failed"}]
    assert middleware.runtime is None


async def test_app_that_ignores_lifespan_still_gets_the_gateway_started_and_stopped(
    settings: Settings,
) -> None:
    middleware = wrap(RawApp(lifespan="ignore"), settings)
    server = LifespanServer(middleware)
    assert await server.event("startup", 1) == [{"type": "lifespan.startup.complete"}]
    assert middleware.runtime is not None
    await server.event("shutdown", 2)
    await asyncio.wait_for(server.task, 10)
    assert server.sent[1] == {"type": "lifespan.shutdown.complete"}
    assert middleware.runtime is None


async def test_app_that_raises_on_lifespan_leaves_the_start_to_the_first_request(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    app = RawApp(lifespan="raise")
    middleware = wrap(app, settings)
    closing.append(middleware)
    server = LifespanServer(middleware)
    server.queue.put_nowait({"type": "lifespan.startup"})
    with pytest.raises(RuntimeError, match="lifespan not supported"):
        await asyncio.wait_for(server.task, 10)  # the server carries on without lifespan
    assert middleware.runtime is None
    assert (await call(middleware, http_scope(b"/premium/a", headers=[PLAIN])))[0]["status"] == 200


async def test_without_lifespan_concurrent_first_requests_start_the_gateway_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, closing: list[PaywallMiddleware]
) -> None:
    real = gateway.asgi.open_runtime
    starts: list[int] = []

    def counting(*args: Any) -> Any:
        starts.append(1)
        return real(*args)

    monkeypatch.setattr(gateway.asgi, "open_runtime", counting)
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    scope: Callable[[], dict[str, Any]] = lambda: http_scope(b"/premium/a", headers=[PLAIN])  # noqa: E731
    results = await asyncio.gather(*(call(middleware, scope()) for _ in range(8)))
    assert [sent[0]["status"] for sent in results] == [200] * 8
    assert starts == [1]
    await middleware.aclose()
    assert middleware.runtime is None


# --- what the app sees ---------------------------------------------------------------------------


async def test_passed_request_reaches_the_app_with_a_new_scope(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    server_state = {"db": "shared"}
    scope = http_scope(
        b"/forms/x/%2e%2e/caf%C3%A9//y",
        b"a=1&transferToken=not-valid&b=%20",
        [
            (b"cookie", b"paywall_session=demo-session-plain; theme=dark"),
            (b"x-paywall-access", b"granted"),
            (b"x_paywall_access", b"granted"),
            (b"x-paywall-customer-id", b"666"),
            (b"x-original-url", b"/premium/a"),
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"accept", b"text/html"),
        ],
        method="POST",  # not redirected: a POST keeps its body, only the token goes
        state=server_state,
    )
    scope["client"] = ("203.0.113.9", 40000)  # not a trusted proxy
    sent = await call(middleware, scope)
    assert sent[0]["status"] == 200
    (inner,) = app.scopes
    assert inner["path"] == "/forms/café/y"
    assert inner["raw_path"] == b"/forms/caf%C3%A9/y"
    assert inner["query_string"] == b"a=1&b=%20"
    assert inner["method"] == "POST"
    assert inner["headers"] == [
        (b"host", b"site.example"),
        (b"cookie", b"theme=dark"),
        (b"accept", b"text/html"),
        (b"x-paywall-access", b"public"),
        (b"x-paywall-cache", b"none"),
    ]
    assert inner["state"] == {
        "db": "shared",
        "paywall": Decision(None, "public", "none", "public_route"),
    }
    assert server_state == {"db": "shared"}  # the server's dict is not the app's
    assert isinstance(inner[VIEW_GATE], ViewGate)
    assert scope["raw_path"] == b"/forms/x/%2e%2e/caf%C3%A9//y"  # the server's scope untouched


async def test_raw_utf8_in_the_path_is_read_as_its_percent_escape(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    raw = await call(middleware, http_scope(b"/premium/caf\xc3\xa9", headers=[NO_RIGHTS]))
    assert raw[0]["status"] == 403  # decided as /premium/caf%C3%A9, a premium page
    sent = await call(middleware, http_scope(b"/premium/caf\xc3\xa9", headers=[PLAIN]))
    assert sent[0]["status"] == 200
    (inner,) = app.scopes
    assert (inner["path"], inner["raw_path"]) == ("/premium/café", b"/premium/caf%C3%A9")


async def test_every_request_gets_its_own_state(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    shared: dict[str, Any] = {}  # what a server hands every request of one lifespan
    await call(middleware, http_scope(b"/premium/a", headers=[PLAIN], state=shared))
    await call(middleware, http_scope(b"/news", state=shared))
    granted, public = (scope["state"]["paywall"] for scope in app.scopes)
    assert (granted.access, granted.customer_id) == ("granted", "100001")
    assert (public.access, public.customer_id) == ("public", None)
    assert shared == {}


async def test_paid_content_leaves_private_public_pages_keep_their_cache_control(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    middleware = wrap(RawApp(), settings)
    closing.append(middleware)
    paid = await call(middleware, http_scope(b"/premium/a", headers=[PLAIN]))
    public = await call(middleware, http_scope(b"/news", headers=[PLAIN]))
    assert header(paid[0], b"cache-control") == b"private, max-age=60"
    assert header(public[0], b"cache-control") == CONTENT_CACHE_CONTROL
    for sent in (paid, public):  # the body streams through as the app sent it
        assert header(sent[0], b"content-type") == b"text/plain"
        assert [(m["body"], m.get("more_body", False)) for m in sent[1:]] == [
            (b"one,", True),
            (b"two", False),
        ]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        pytest.param(b"/premium/a", [NO_RIGHTS], 403, id="denied"),
        pytest.param(b"/premium/a", [], 303, id="no-session"),
        pytest.param(b"/premium%2Fa", [PLAIN], 400, id="ambiguous-path"),
        pytest.param(b"/premium/caf\xff", [PLAIN], 400, id="raw-invalid-utf8"),
        pytest.param(
            b"/premium/a",
            [(b"cookie", b"paywall_session=a; PAYWALL_SESSION=b")],
            400,
            id="malformed-cookie",
        ),
        pytest.param(b"/_paywall/nothing", [], 404, id="unknown-internal"),
    ],
)
async def test_refused_requests_never_reach_the_app(
    settings: Settings,
    closing: list[PaywallMiddleware],
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    status: int,
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    sent = await call(middleware, http_scope(path, headers=headers))
    assert sent[0]["status"] == status
    assert header(sent[0], b"content-length") == str(len(sent[1]["body"])).encode()
    assert app.scopes == []


# --- websockets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        pytest.param(
            {"websocket.http.response": {}},
            ["websocket.http.response.start", "websocket.http.response.body"],
            id="denial-response",
        ),
        pytest.param({}, ["websocket.close"], id="close-1008"),
    ],
)
async def test_refused_websocket_is_answered_before_the_handshake(
    settings: Settings,
    closing: list[PaywallMiddleware],
    extensions: dict[str, Any],
    expected: list[str],
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    scope = http_scope(b"/ws", headers=[NO_RIGHTS], kind="websocket", extensions=extensions)
    sent = await call(middleware, scope)
    assert [message["type"] for message in sent] == expected
    if extensions:
        assert sent[0]["status"] == 403
        assert b"Subscribers only" in sent[1]["body"]
    else:
        assert sent[0]["code"] == 1008
    assert app.scopes == []


async def test_granted_websocket_reaches_the_app_with_the_decision(
    settings: Settings, closing: list[PaywallMiddleware]
) -> None:
    app = RawApp()
    middleware = wrap(app, settings)
    closing.append(middleware)
    sent = await call(middleware, http_scope(b"/ws", headers=[PLAIN], kind="websocket"))
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.close"]
    (inner,) = app.scopes
    assert inner["state"]["paywall"].access == "granted"
    assert (b"x-paywall-customer-id", b"100001") in inner["headers"]
    assert all(name != b"cookie" for name, _ in inner["headers"])


# --- per-view rules ------------------------------------------------------------------------------


async def test_view_rule_without_the_middleware_fails_closed() -> None:
    dependency = require_access("premium")
    request = Request(http_scope(b"/view", headers=[PLAIN]))
    with pytest.raises(RuntimeError, match="PaywallMiddleware"):
        await dependency(request)


def test_the_middleware_needs_no_web_framework() -> None:
    """gateway.asgi imports without Starlette or FastAPI (only gateway.fastapi needs them)."""
    code = (
        "import sys\n"
        "for name in ('starlette', 'fastapi'):\n"
        "    sys.modules[name] = None  # any import of it fails\n"
        "import gateway.asgi\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)
