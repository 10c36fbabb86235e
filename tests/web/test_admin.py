"""The admin listener: /metrics, /healthz, /readyz, looked up on the main app at request time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import HttpUrl

from gateway.config import ServerSettings, Settings
from gateway.metrics import Metrics
from gateway.web.admin import create_admin_app
from gateway.web.app import METRICS, RUNTIME, Runtime, create_app

AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
AiohttpServer = Callable[..., Awaitable[TestServer]]


class StubRuntime:
    """Stands in for the main app's Runtime: only readiness() is read by the admin app."""

    def __init__(self, ready: bool, details: dict[str, Any], error: Exception | None = None):
        self.ready = ready
        self.details = details
        self.error = error
        self.calls = 0

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.ready, dict(self.details)


def main_app(metrics: Metrics | None = None) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics if metrics is not None else Metrics()
    return app


def set_runtime(app: web.Application, runtime: StubRuntime) -> None:
    app[RUNTIME] = cast(Runtime, runtime)


async def test_metrics_exposes_the_main_apps_registry(aiohttp_client: AiohttpClient) -> None:
    metrics = Metrics()
    metrics.request("proxy", "granted", 0.002)
    client = await aiohttp_client(create_admin_app(main_app(metrics)))
    metrics.request("proxy", "granted", 0.003)  # read at request time, not at creation
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    body = await response.text()
    assert 'paywall_requests_total{mode="proxy",outcome="granted"} 2.0' in body
    assert "paywall_decision_seconds_count 2.0" in body


async def test_healthz(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_admin_app(main_app()))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "alive"}
    head = await client.head("/healthz")
    assert head.status == 200


async def test_readyz_before_the_main_app_started(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_admin_app(main_app()))
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "not_ready"


async def test_readyz_finds_the_runtime_set_after_creation(aiohttp_client: AiohttpClient) -> None:
    main = main_app()
    client = await aiohttp_client(create_admin_app(main))
    assert (await client.get("/readyz")).status == 503
    runtime = StubRuntime(True, {"config": "loaded", "platform": "closed"})
    set_runtime(main, runtime)
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "config": "loaded", "platform": "closed"}
    assert runtime.calls == 1


async def test_readyz_not_ready(aiohttp_client: AiohttpClient) -> None:
    main = main_app()
    set_runtime(main, StubRuntime(False, {"platform": "open", "status": "ignored"}))
    client = await aiohttp_client(create_admin_app(main))
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"status": "not_ready", "platform": "open"}


async def test_readyz_failing_check_is_not_ready(aiohttp_client: AiohttpClient) -> None:
    main = main_app()
    set_runtime(main, StubRuntime(True, {}, error=RuntimeError("redis ping exploded")))
    client = await aiohttp_client(create_admin_app(main))
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not_ready"
    assert "exploded" not in str(body)


async def test_main_app_middlewares_do_not_run_on_admin_requests(
    aiohttp_client: AiohttpClient,
) -> None:
    seen: list[str] = []

    async def recorder(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    main = web.Application(middlewares=[recorder])
    main[METRICS] = Metrics()
    admin = create_admin_app(main)
    assert not admin.middlewares
    client = await aiohttp_client(admin)
    for path in ("/metrics", "/healthz", "/readyz"):
        await client.get(path)
    assert seen == []


async def test_unknown_path_is_404(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_admin_app(main_app()))
    assert (await client.get("/")).status == 404
    assert (await client.post("/healthz")).status == 405


async def test_readyz_with_the_real_gateway_app(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    settings = Settings(server=ServerSettings(upstream=HttpUrl("http://127.0.0.1:9")))
    main = create_app(settings)
    admin = await aiohttp_client(create_admin_app(main))
    assert (await admin.get("/readyz")).status == 503  # not started yet
    await aiohttp_server(main)  # startup runs the main app's cleanup_ctx: RUNTIME is set
    response = await admin.get("/readyz")
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "ready"
    assert "paywall_" in await (await admin.get("/metrics")).text()
