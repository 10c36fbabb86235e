"""The gateway's aiohttp application: one access service, two ways to ask it.

``proxy`` mode: every request is decided and, if it may pass, streamed to the upstream with the
decision in ``X-Paywall-*`` headers. ``auth_request`` mode: nginx (``auth_request``), Traefik
(ForwardAuth) or Caddy (``forward_auth``) ask ``GET /_paywall/auth`` about the visitor's request
and serve the content themselves; ``/_paywall/deny`` is where nginx's ``error_page`` sends a
refused visitor. Both modes serve ``/_paywall/transfer`` (the login hand-off). What each
endpoint answers is :mod:`gateway.http.policy`'s; the handlers are :mod:`gateway.web.handlers`.

Each resource starts and stops in its own ``cleanup_ctx`` entry, in this order (and the
reverse at shutdown): the platform client, the Redis tier (client, breaker, invalidation bus),
the access service (its background refreshes stop before the clients they use close), the
upstream session (proxy mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from yarl import URL

from gateway.access.build import utc_now
from gateway.config import Settings
from gateway.http.forwarded import TrustedProxies
from gateway.http.policy import FrontEnd
from gateway.metrics import Metrics
from gateway.runtime import Platform, RedisTier, Runtime, open_platform, open_redis, open_service
from gateway.store.cache import Clock
from gateway.web.handlers import Driver
from gateway.web.protocol import ANSWER_NOW, DIRECT_HANDLER, handler_args
from gateway.web.proxy import ProxyOptions, UpstreamProxy, create_upstream_session

__all__ = ["METRICS", "RUNTIME", "SETTINGS", "Runtime", "create_app"]


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
_PLATFORM: web.AppKey[Platform] = web.AppKey("platform", Platform)
_REDIS: web.AppKey[RedisTier | None] = web.AppKey("redis", RedisTier)

Context = Callable[[web.Application], AsyncIterator[None]]


def _platform_context(clock: Clock) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with open_platform(app[SETTINGS], app[METRICS], clock) as platform:
            app[_PLATFORM] = platform
            yield

    return context


async def _redis_context(app: web.Application) -> AsyncIterator[None]:
    async with open_redis(app[SETTINGS], app[METRICS]) as tier:
        app[_REDIS] = tier
        yield


def _service_context(driver: Driver, clock: Clock) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings, metrics = app[SETTINGS], app[METRICS]
        async with open_service(settings, metrics, clock, app[_PLATFORM], app[_REDIS]) as runtime:
            driver.attach(runtime.service, None)
            app[RUNTIME] = runtime
            yield

    return context


def _upstream_context(driver: Driver) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        server = app[SETTINGS].server
        options = ProxyOptions(
            upstream=URL(str(server.upstream)),
            connect_timeout=server.upstream_connect_timeout,
            read_timeout=server.upstream_read_timeout,
            max_request_body=server.max_request_body or None,
            forward_session_token=server.forward_session_token,
            session_cookie=server.session_cookie,
            transfer_token_param=server.transfer_token_param,
        )
        async with create_upstream_session(options) as session:
            upstream = UpstreamProxy(session, options, TrustedProxies(server.trusted_proxies))
            driver.attach(app[RUNTIME].service, upstream)
            yield

    return context


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, clock: Clock = utc_now
) -> web.Application:
    """The main application for ``settings.server.mode``.

    ``metrics`` (with its own registry) is created here unless given; ``app[METRICS]`` and
    ``app[SETTINGS]`` are set at once, ``app[RUNTIME]`` when the app starts (the platform and
    upstream client sessions need the running loop). Raises ConfigError for an unreadable
    paywall template.
    """
    metrics = metrics if metrics is not None else Metrics()
    driver = Driver(FrontEnd(settings, clock), metrics)
    # nginx's parser limits, and one short, rate-limited log line per request the parser
    # refuses (gateway.web.protocol).
    app = web.Application(handler_args=handler_args())
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(_platform_context(clock))
    app.cleanup_ctx.append(_redis_context)
    app.cleanup_ctx.append(_service_context(driver, clock))
    if settings.server.mode == "proxy":
        app.cleanup_ctx.append(_upstream_context(driver))
    # One catch-all route (the policy routes by the normalised path); under GatewayRunner
    # (``serve``) not even that: requests go straight to the driver. Either way the driver
    # answers Expect itself (the route's expect handler does nothing).
    app.router.add_route("*", "/{tail:.*}", driver.handle, expect_handler=_expect_nothing)
    app[DIRECT_HANDLER] = driver.handle
    # And what can be answered from memory is answered as the parser reads it (serve only).
    app[ANSWER_NOW] = driver.answer_now
    return app


async def _expect_nothing(request: web.Request) -> None:
    """The catch-all route's expect handler: the driver's handler answers Expect itself."""
