"""The gateway's HTTP application: one access service, two ways to ask it.

``proxy`` mode: every request is decided and, if it may pass, streamed to the upstream with the
decision in ``X-Paywall-*`` headers. ``auth_request`` mode: nginx (``auth_request``), Traefik
(ForwardAuth) or Caddy (``forward_auth``) ask ``GET /_paywall/auth`` about the visitor's request
and serve the content themselves. Both modes serve:

* ``/_paywall/transfer?transferToken=…&return_to=…`` — the login hand-off: exchange the token,
  set the session cookie, 303 to ``return_to`` (a same-site path or an allowed host);

and ``auth_request`` mode also ``/_paywall/deny``, where nginx's ``error_page`` sends a visitor
the auth endpoint refused: it answers exactly as proxy mode would (login redirect, paywall page,
503, or the transfer-token hand-off), so deny pages look the same in both modes.

The handlers translate HTTP into an :class:`AccessRequest` and the :class:`AccessOutcome` back
into HTTP; the service does the rest. Malformed input is a 400 (in ``/_paywall/auth``, whose
caller only understands 2xx/401/403: a 403 with ``X-Paywall-Access: bad_request``, which
``/_paywall/deny`` then turns into the 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as redis
from aiohttp import web
from yarl import URL

from gateway.config import Settings
from gateway.errors import BadRequest, PlatformUnavailable
from gateway.http.credentials import query_values
from gateway.metrics import Metrics
from gateway.platform import PlenigoClient
from gateway.service.access import AccessService
from gateway.service.breaker import CircuitBreaker
from gateway.service.build import (
    build_access_service,
    build_redis_guard,
    platform_breaker,
    utc_now,
)
from gateway.service.bus import InvalidationBus
from gateway.service.cache import Clock
from gateway.service.outcome import AccessOutcome, AccessRequest, Credentials, Verdict
from gateway.service.redis_connect import connect_redis
from gateway.service.redis_guard import RedisGuard
from gateway.web.forwarded import TrustedProxies
from gateway.web.frontend import (
    Responder,
    Visitor,
    bad_request,
    credentials,
    load_template,
    split_target,
    valid_host,
    valid_method,
)
from gateway.web.protocol import handler_args
from gateway.web.proxy import (
    ProxyOptions,
    UpstreamProxy,
    create_upstream_session,
    last_element,
    wants_json,
)

__all__ = ["METRICS", "RUNTIME", "SETTINGS", "Runtime", "create_app"]

access_log = logging.getLogger("gateway.access")
decision_log = logging.getLogger("gateway.decision")
log = logging.getLogger(__name__)

PREFIX = "/_paywall/"
_PASS = (Verdict.GRANTED, Verdict.PUBLIC)
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Where a front proxy names the visitor's request; each must come once.
_ORIGINAL_REQUEST_HEADERS = (
    "X-Original-URI",
    "X-Forwarded-Uri",
    "X-Original-Method",
    "X-Forwarded-Method",
)


@dataclass
class Runtime:
    """What the running gateway holds; created when the main app starts."""

    settings: Settings
    metrics: Metrics
    service: AccessService
    breaker: CircuitBreaker
    redis: RedisGuard | None = None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz: not ready while the platform breaker is open. Redis
        trouble is reported ("degraded", or "open" while its breaker skips Redis) but keeps the
        gateway ready: it still answers, from L1 and the platform."""
        state = self.breaker.state
        redis_state = "off" if self.redis is None else self.redis.state
        return state != "open", {"config": "loaded", "platform": state, "redis": redis_state}


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def _paywall_headers(outcome: AccessOutcome) -> dict[str, str]:
    """The decision as request headers for the upstream (and ``auth_request_set``)."""
    access = "fail-open" if outcome.fail_open else outcome.verdict.value
    headers = {"X-Paywall-Access": access, "X-Paywall-Cache": outcome.cache}
    if outcome.customer_id is not None:
        headers["X-Paywall-Customer-Id"] = outcome.customer_id
    return headers


class _Refused(Exception):
    """The auth endpoint cannot tell what request it is asked about."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Gateway:
    """The request handlers; the service and upstream are attached when the app starts."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Clock) -> None:
        server = settings.server
        self._settings = settings
        self._server = server
        self._metrics = metrics
        self._clock = clock
        self._trusted = TrustedProxies(server.trusted_proxies)
        self._responder = Responder(server, load_template(server))
        self._transfer_param = server.transfer_token_param
        self._service: AccessService | None = None
        self._upstream: UpstreamProxy | None = None

    def attach(self, service: AccessService, upstream: UpstreamProxy | None) -> None:
        self._service = service
        self._upstream = upstream

    @property
    def service(self) -> AccessService:
        if self._service is None:
            raise RuntimeError("the gateway application has not started")
        return self._service

    # --- the visitor ------------------------------------------------------------------------

    def split(self, target: str) -> tuple[str, str]:
        """(normalised path, raw query) of a request target; BadRequest if it is ambiguous."""
        return split_target(target, path_parameters=self._server.allow_path_parameters)

    def _direct_visitor(self, request: web.Request, path: str, query: str) -> Visitor:
        """The visitor of a request made to the gateway itself (proxy mode, /_paywall/*)."""
        headers = request.headers
        scheme, host = request.scheme, headers.get("Host")
        if self._trusted.is_trusted(request.remote):
            scheme = last_element(headers.getall("X-Forwarded-Proto", [])) or scheme
            host = last_element(headers.getall("X-Forwarded-Host", [])) or host
        scheme = scheme if scheme in ("http", "https") else "http"
        return Visitor(request.method, path, query, scheme, valid_host(host), headers)

    def _original_visitor(self, request: web.Request) -> Visitor:
        """The visitor's request that nginx / Traefik / Caddy ask about (auth_request mode)."""
        if not self._trusted.is_trusted(request.remote):
            raise _Refused("untrusted_proxy")
        headers = request.headers
        for name in _ORIGINAL_REQUEST_HEADERS:
            if len(headers.getall(name, ())) > 1:
                # Which one did the proxy mean? Its cache key and the gateway might differ.
                raise BadRequest(f"{name} given more than once")
        target = headers.get("X-Original-URI") or headers.get("X-Forwarded-Uri")
        if not target:
            raise _Refused("no_original_uri")
        method = headers.get("X-Original-Method") or headers.get("X-Forwarded-Method") or "GET"
        path, query = self.split(target)  # BadRequest for an ambiguous path
        scheme = last_element(headers.getall("X-Forwarded-Proto", [])) or request.scheme
        scheme = scheme if scheme in ("http", "https") else "http"
        host = last_element(headers.getall("X-Forwarded-Host", [])) or headers.get("Host")
        return Visitor(valid_method(method), path, query, scheme, valid_host(host), headers)

    # --- proxy mode -------------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        try:
            path, query = self.split(request.raw_path)
            if path.startswith(PREFIX):
                return await self.internal(request, path, query, started)
            creds = credentials(request.headers, query, self._server)
        except BadRequest as exc:
            return self.bad_request(request, "proxy", str(exc), started)
        visitor = Visitor(request.method, path, query, "", None, request.headers)
        outcome = await self.service.check(AccessRequest(request.method, path, creds))
        decided = perf_counter()
        self._metrics.request("proxy", outcome.verdict.value, decided - started)
        response = await self._respond(request, visitor, creds, outcome, path)
        self._log(request, path, response.status, outcome, started)
        return response

    async def _respond(
        self,
        request: web.Request,
        visitor: Visitor,
        creds: Credentials,
        outcome: AccessOutcome,
        path: str,
    ) -> web.StreamResponse:
        verdict = outcome.verdict
        if visitor.query and request.method in _SAFE_METHODS and self._has_transfer(visitor):
            handoff = self._handoff(visitor, outcome)
            if handoff is not None:
                return handoff
        if verdict in _PASS:
            upstream = self._upstream
            assert upstream is not None  # proxy mode always has one
            # Granted content is this visitor's: no shared cache may keep it for others.
            private = verdict is Verdict.GRANTED
            return await upstream.forward(request, path, _paywall_headers(outcome), private=private)
        visitor = self._direct_visitor(request, visitor.path, visitor.query)
        return self._responder.deny(visitor, outcome, login_redirect=True)

    def _has_transfer(self, visitor: Visitor) -> bool:
        return bool(query_values(visitor.query, self._transfer_param))

    def _handoff(self, visitor: Visitor, outcome: AccessOutcome) -> web.Response | None:
        """A visitor arriving with a transfer token leaves for the same URL without it: with
        the session cookie when the exchange worked. Unauthenticated and unavailable visitors
        get their usual response (whose return URL is already without the token)."""
        if outcome.session_token is not None:
            return self._responder.redirect(
                self._responder.location(visitor), session=outcome.session_token
            )
        if outcome.verdict in (Verdict.GRANTED, Verdict.PUBLIC, Verdict.DENIED):
            return self._responder.redirect(self._responder.location(visitor))
        return None

    async def internal(
        self, request: web.Request, path: str, query: str, started: float
    ) -> web.StreamResponse:
        if path == "/_paywall/transfer":
            return await self._transfer(request, path, query, started)
        if self._server.mode == "auth_request":
            if path == "/_paywall/auth":
                return await self.auth(request)
            if path == "/_paywall/deny":
                return await self._deny(request, started)
        raise web.HTTPNotFound(text="Not found\n")

    # --- auth_request mode ------------------------------------------------------------------

    async def auth(self, request: web.Request) -> web.Response:
        """GET /_paywall/auth: 200 / 401 / 403 (503 if configured) about the original request."""
        started = perf_counter()
        try:
            visitor = self._original_visitor(request)
            creds = credentials(visitor.headers, visitor.query, self._server, transfer=False)
        except _Refused as refused:
            log.warning("auth request refused (%s) from %s", refused.reason, request.remote)
            return self._auth_refusal(request, "denied", refused.reason, started)
        except BadRequest as exc:
            return self._auth_refusal(request, "bad_request", str(exc), started)
        if visitor.query and self._has_transfer(visitor):
            # Only a response that can set a cookie may spend the one-time token: refuse, and
            # nginx's error_page sends the visitor to /_paywall/deny, which does the hand-off.
            # This also covers spellings of the parameter a front proxy's own match misses.
            return self._auth_refusal(
                request, "unauthenticated", "transfer_token", started, status=401
            )
        outcome = await self.service.check(AccessRequest(visitor.method, visitor.path, creds))
        self._metrics.request("auth_request", outcome.verdict.value, perf_counter() - started)
        verdict = outcome.verdict
        if verdict in _PASS:
            response = web.Response(status=200)
            response.headers.update(_paywall_headers(outcome))
            response.headers["X-Accel-Expires"] = str(self._reuse_seconds(outcome))
        else:
            response = self._responder.deny(visitor, outcome, login_redirect=False)
            # nginx copies a 401's WWW-Authenticate into whatever the visitor finally gets (the
            # login redirect, or the deny page's own 401: twice); the deny page sets its own.
            response.headers.popall("WWW-Authenticate", None)
            if verdict is Verdict.UNAVAILABLE:
                response.set_status(self._server.auth_unavailable_status)
            response.headers.update(_paywall_headers(outcome))
            response.headers["X-Paywall-Reason"] = outcome.reason
            response.headers["X-Accel-Expires"] = "0"
        self._log(request, visitor.path, response.status, outcome, started)
        return response

    def _reuse_seconds(self, outcome: AccessOutcome) -> int:
        """How long the front proxy may reuse a grant: the decision's own validity, capped."""
        cap = self._server.auth_cache_max_seconds
        if outcome.verdict is Verdict.PUBLIC:
            return cap
        if outcome.expires_at is None or outcome.fail_open:
            return 0
        remaining = (outcome.expires_at - self._clock()).total_seconds()
        return max(0, min(cap, math.floor(remaining)))

    def _auth_refusal(
        self,
        request: web.Request,
        access: str,
        reason: str,
        started: float,
        *,
        status: int = 403,
    ) -> web.Response:
        self._metrics.request("auth_request", access, perf_counter() - started)
        response = web.Response(status=status, text=f"{reason}\n")
        response.headers["X-Paywall-Access"] = access
        response.headers["X-Paywall-Reason"] = reason if access != "bad_request" else access
        response.headers["X-Accel-Expires"] = "0"
        response.headers["Cache-Control"] = "no-store"
        self._log_line(request, "", status, access, reason, "none", None, started)
        return response

    async def _deny(self, request: web.Request, started: float) -> web.StreamResponse:
        """Where nginx's error_page sends a refused visitor: the answer proxy mode would give."""
        try:
            visitor = self._original_visitor(request)
            creds = credentials(visitor.headers, visitor.query, self._server)
        except _Refused as refused:
            log.warning("deny page refused (%s) from %s", refused.reason, request.remote)
            raise web.HTTPForbidden(text="Forbidden\n") from None
        except BadRequest as exc:
            return self.bad_request(request, "auth_deny", str(exc), started)
        outcome = await self.service.check(AccessRequest(visitor.method, visitor.path, creds))
        self._metrics.request("auth_deny", outcome.verdict.value, perf_counter() - started)
        response: web.StreamResponse | None = None
        if visitor.method in _SAFE_METHODS and visitor.query and self._has_transfer(visitor):
            response = self._handoff(visitor, outcome)
        if response is None:
            if outcome.verdict in _PASS:
                # Allowed by now (a login or purchase in between): let the visitor ask again.
                response = self._responder.redirect(self._responder.location(visitor))
            else:
                response = self._responder.deny(visitor, outcome, login_redirect=True)
        self._log(request, visitor.path, response.status, outcome, started)
        return response

    # --- the login hand-off -----------------------------------------------------------------

    async def _transfer(
        self, request: web.Request, path: str, query: str, started: float
    ) -> web.StreamResponse:
        """GET /_paywall/transfer?transferToken=…&return_to=…: exchange, cookie, 303."""
        if request.method not in _SAFE_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, sorted(_SAFE_METHODS))
        visitor = self._direct_visitor(request, path, query)
        try:
            token = credentials(request.headers, query, self._server).transfer_token
            if token is None:
                raise BadRequest(f"{self._transfer_param} is missing")
            target = self._return_target(request, visitor, query)
        except BadRequest as exc:
            return self.bad_request(request, "transfer", str(exc), started)
        try:
            identity = await self.service.login(token)
        except PlatformUnavailable:
            identity = None
            outcome = AccessOutcome(Verdict.UNAVAILABLE, "identity_unavailable")
        else:
            outcome = AccessOutcome(
                Verdict.GRANTED if identity else Verdict.UNAUTHENTICATED,
                "login" if identity else "invalid_credential",
                customer_id=identity.customer_id if identity else None,
            )
        self._metrics.request("transfer", outcome.verdict.value, perf_counter() - started)
        if identity is not None and identity.session_token is not None:
            response = self._responder.redirect(target, session=identity.session_token)
        else:
            landing = _landing_visitor(visitor, target)
            response = self._responder.deny(landing, outcome, login_redirect=True)
        self._log(request, path, response.status, outcome, started)
        return response

    def _return_target(self, request: web.Request, visitor: Visitor, query: str) -> str:
        values = query_values(query, self._server.login_return_param)
        if len(set(values)) > 1:
            raise BadRequest(f"{self._server.login_return_param} given more than once")
        if values and values[0]:
            return self._responder.return_target(values[0], visitor)
        # nginx may send the visitor here with the original request in X-Original-URI.
        original = request.headers.get("X-Original-URI")
        if original and self._trusted.is_trusted(request.remote):
            path, original_query = self.split(original)
            return self._responder.location(
                Visitor("GET", path, original_query, "", None, request.headers)
            )
        return "/"

    # --- shared -----------------------------------------------------------------------------

    def bad_request(
        self, request: web.Request, mode: str, message: str, started: float
    ) -> web.Response:
        self._metrics.request(mode, "bad_request", perf_counter() - started)
        self._log_line(request, "", 400, "bad_request", message, "none", None, started)
        return bad_request(wants_json(request.headers.get("Accept", "")), message)

    def _log(
        self,
        request: web.Request,
        path: str,
        status: int,
        outcome: AccessOutcome,
        started: float,
    ) -> None:
        if decision_log.isEnabledFor(logging.DEBUG):
            decision_log.debug(
                "decision",
                extra={
                    "fields": {
                        "path": path,
                        "verdict": outcome.verdict.value,
                        "reason": outcome.reason,
                        "cache": outcome.cache,
                        "customer_id": outcome.customer_id,
                        "fail_open": outcome.fail_open,
                        "expires_at": outcome.expires_at.isoformat()
                        if outcome.expires_at
                        else None,
                    }
                },
            )
        self._log_line(
            request,
            path,
            status,
            outcome.verdict.value,
            outcome.reason,
            outcome.cache,
            outcome.customer_id,
            started,
        )

    def _log_line(
        self,
        request: web.Request,
        path: str,
        status: int,
        verdict: str,
        reason: str,
        cache: str,
        customer_id: str | None,
        started: float,
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        forwarded_for = request.headers.get("X-Forwarded-For")
        access_log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": path or request.path,  # never the query: it may hold a token
                    "status": status,
                    "verdict": verdict,
                    "reason": reason,
                    "cache": cache,
                    "customer_id": customer_id,
                    "client": self._trusted.client_address(request.remote, forwarded_for),
                    "duration_ms": round((perf_counter() - started) * 1000, 3),
                }
            },
        )


def _landing_visitor(visitor: Visitor, target: str) -> Visitor:
    """The visitor as if already on ``target`` (a checked return target), for the login
    redirect's return URL."""
    parts = urlsplit(target)
    scheme = parts.scheme or visitor.scheme
    host = parts.netloc or visitor.host
    return Visitor("GET", parts.path, parts.query, scheme, host, visitor.headers)


def _platform_session() -> aiohttp.ClientSession:
    """The client session for the platform API: pooled keep-alive, no cookies, no env proxy."""
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    )


def _runtime_context(
    gateway: Gateway, clock: Clock
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings, metrics = app[SETTINGS], app[METRICS]
        server = settings.server
        platform_http = _platform_session()
        upstream_http: aiohttp.ClientSession | None = None
        redis_client: redis.Redis | None = None
        redis_guard: RedisGuard | None = None
        bus: InvalidationBus | None = None
        bus_task: asyncio.Task[None] | None = None
        try:
            client = PlenigoClient(
                platform_http, settings.platform, clock=clock, observer=metrics.observer
            )
            breaker = platform_breaker(settings, clock)
            if settings.cache.redis_url:
                redis_client = connect_redis(
                    settings.cache.redis_url,
                    connect_timeout=max(settings.cache.redis_timeout, 0.5),
                )
                redis_guard = build_redis_guard(settings, metrics)
                bus = InvalidationBus(redis_client, guard=redis_guard)
                bus_task = asyncio.create_task(bus.run(), name="paywall-invalidation-bus")
            service = build_access_service(
                settings,
                client,
                metrics,
                clock=clock,
                breaker=breaker,
                redis_client=redis_client,
                redis_guard=redis_guard,
                bus=bus,
            )
            upstream = None
            if server.mode == "proxy":
                options = ProxyOptions(
                    upstream=URL(str(server.upstream)),
                    connect_timeout=server.upstream_connect_timeout,
                    read_timeout=server.upstream_read_timeout,
                    max_request_body=server.max_request_body or None,
                    forward_session_token=server.forward_session_token,
                    session_cookie=server.session_cookie,
                    transfer_token_param=server.transfer_token_param,
                )
                upstream_http = create_upstream_session(options)
                upstream = UpstreamProxy(
                    upstream_http, options, TrustedProxies(server.trusted_proxies)
                )
            gateway.attach(service, upstream)
            app[RUNTIME] = Runtime(settings, metrics, service, breaker, redis_guard)
            yield
            await service.close()  # background refreshes, before the clients they use close
        finally:
            await platform_http.close()
            if bus_task is not None:
                bus_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bus_task
            if redis_client is not None:
                await redis_client.aclose()
            if upstream_http is not None:
                await upstream_http.close()

    return context


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    gateway = Gateway(settings, metrics, clock)
    # nginx's parser limits, and one short, rate-limited log line per request the parser
    # refuses (gateway.web.protocol).
    app = web.Application(handler_args=handler_args())
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(_runtime_context(gateway, clock))
    if settings.server.mode == "proxy":
        app.router.add_route("*", "/{tail:.*}", gateway.proxy)
    else:
        app.router.add_route("*", "/{tail:.*}", _auth_mode_router(gateway))
    return app


def _auth_mode_router(gateway: Gateway) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        try:
            path, query = gateway.split(request.raw_path)
        except BadRequest as exc:
            return gateway.bad_request(request, "auth_request", str(exc), started)
        if path == "/_paywall/auth":
            return await gateway.auth(request)
        if path.startswith(PREFIX):
            return await gateway.internal(request, path, query, started)
        raise web.HTTPNotFound(text="Not found: in auth_request mode only /_paywall/* is served\n")

    return route
