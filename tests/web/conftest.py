"""A whole gateway on loopback: the platform simulator, a content server and the gateway app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.sandbox.app import STATE, SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from gateway.web.app import create_app
from gateway.web.handlers import Driver
from gateway.web.protocol import GatewayRunner
from tests.conftest import REPO_ROOT
from tests.service.conftest import T0, ManualClock

API_TOKEN = "sandbox-api-token"
ROUTES = [
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/upload/**", "methods": ["POST"], "access_rights": ["premium"]},
    {"path": "/**", "public": True},
]


@dataclass
class ContentLog:
    """What the content server received."""

    requests: list[dict[str, Any]] = field(default_factory=list)


CONTENT_LOG = web.AppKey("content_log", ContentLog)
CONTENT_CACHE_CONTROL = "public, max-age=60, s-maxage=600"


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "method": request.method,
        "path_qs": request.raw_path,
        "headers": {name: value for name, value in request.headers.items()},
        "body": len(body),
    }
    request.app[CONTENT_LOG].requests.append(seen)
    # A content server that wants its pages in a CDN: the gateway must not let paid ones be.
    return web.json_response(seen, headers={"Cache-Control": CONTENT_CACHE_CONTROL})


def content_app() -> web.Application:
    app = web.Application()
    app[CONTENT_LOG] = ContentLog()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@dataclass
class Stack:
    """The three servers, the shared clock, and a client session (no redirects by default)."""

    gateway: TestServer
    platform: TestServer
    content: TestServer
    metrics: Metrics
    clock: ManualClock
    http: aiohttp.ClientSession
    settings: Settings

    @property
    def content_requests(self) -> list[dict[str, Any]]:
        return self.content.app[CONTENT_LOG].requests

    def url(self, path: str) -> str:
        return str(self.gateway.make_url("")) + path

    def platform_calls(self, endpoint: str) -> float:
        return sum(
            self.metrics.value(
                "paywall_platform_requests_total", {"endpoint": endpoint, "status": status}
            )
            for status in ("200", "401", "404", "412", "500", "429")
        )

    def platform_down(self, down: bool = True) -> None:
        self.platform.app[STATE].options.error_rate = 1.0 if down else 0.0

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        kwargs.setdefault("allow_redirects", False)
        response = await self.http.get(self.url(path), **kwargs)
        await response.read()
        return response

    async def transfer_token(self, session: str = "demo-session-plain") -> str:
        url = self.platform.make_url("/api/v3.0/sessions/transferToken")
        headers = {"X-plenigo-token": API_TOKEN}
        async with self.http.post(url, json={"customerSession": session}, headers=headers) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["transferToken"]
            return token


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


class GatewayTestServer(TestServer):
    """A test server that runs the app as ``paywall-gateway serve`` does: with
    :class:`~gateway.web.protocol.GatewayRunner` (no router: the driver's direct handler)."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def start_stack(
    aiohttp_server: Any, http: aiohttp.ClientSession
) -> AsyncIterator[StartStack]:
    """``await start_stack(server={...}, access={...})``: sections override the defaults. The
    gateway runs as ``paywall-gateway serve`` runs it (:class:`GatewayTestServer`)."""
    gateways: list[TestServer] = []

    async def start(**sections: Any) -> Stack:
        clock = ManualClock()
        seed = load_data(REPO_ROOT / "gateway" / "resources" / "sandbox-data.json", T0)
        platform = await aiohttp_server(
            create_sandbox(seed, SandboxOptions(api_token=API_TOKEN), clock=clock)
        )
        content = await aiohttp_server(content_app())
        server: dict[str, Any] = {
            "upstream": str(content.make_url("/")),
            "cookie_secure": False,
            "login_url": "https://login.example/sso",
        }
        server.update(sections.pop("server", {}))
        platform_section = {
            "base_url": str(platform.make_url("/api/v3.0")),
            "api_token": API_TOKEN,
            "max_retries": 0,
        }
        platform_section.update(sections.pop("platform", {}))
        sections.setdefault("routes", ROUTES)
        settings = Settings(server=server, platform=platform_section, **sections)
        metrics = Metrics()
        gateway = GatewayTestServer(create_app(settings, metrics=metrics, clock=clock))
        gateways.append(gateway)
        await gateway.start_server()
        return Stack(gateway, platform, content, metrics, clock, http, settings)

    yield start
    for gateway in reversed(gateways):
        await gateway.close()


@pytest.fixture
def slow_way(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The targets of the requests that went aiohttp's way (the driver's ``handle``)."""
    seen: list[str] = []
    handle = Driver.handle

    async def counting(self: Driver, request: web.BaseRequest) -> web.StreamResponse:
        seen.append(request.raw_path)
        return await handle(self, request)

    monkeypatch.setattr(Driver, "handle", counting)
    return seen
