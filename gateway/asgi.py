"""The ASGI driver of the front-end policy: ``app = PaywallMiddleware(app, config="gateway.toml")``.

Pure ASGI (no ``BaseHTTPMiddleware``: responses and context variables pass untouched). Like
every driver it only moves bytes; what a request is and what it gets is
:mod:`gateway.http.policy`'s:

- ``http`` and ``websocket`` scopes become a :class:`~gateway.http.request.RequestView` with
  the *raw* target (``raw_path`` + ``query_string``, never the decoded ``path``: two readings
  of one path is how a public rule ends up matching a premium page); a websocket is a ``GET``.
  Routes match the path as the server received it (uvicorn puts ``root_path`` in front).
- A :class:`~gateway.http.steps.Pass` calls the app with a *new* scope: ``path`` / ``raw_path``
  the normalised path (``path`` percent-decoded), ``query_string`` without the transfer token,
  the headers of :func:`~gateway.http.forward.forward_headers` (client ``X-Paywall-*`` and
  look-alikes, routing overrides and, unless ``forward_session_token``, session credentials
  gone; the decision added), ``state["paywall"]`` the :class:`~gateway.http.steps.Decision`
  (``request.state.paywall``) in a copy of the server's state dict. The response streams
  through untouched, except that paid content (``Pass.private``) gets a private
  Cache-Control, so no CDN keeps one visitor's page for the next.
- An :class:`~gateway.http.steps.Answer` (deny pages, login redirect, the transfer-token 303 +
  cookie, 400 / 404 / 405 / 503, ``/_paywall/transfer``) is the middleware's own reply; the app
  is not called. A websocket is refused before its handshake: with the reply as a denial
  response when the server offers the ``websocket.http.response`` extension (uvicorn does),
  else with ``websocket.close`` (1008), which the server sends as a bare HTTP 403.

Resources (:func:`gateway.runtime.open_runtime`: platform client, Redis tier, access service)
live on the server's event loop:

- *Lifespan*: the ``lifespan`` scope still reaches the app. ``lifespan.startup`` starts the
  gateway before the app sees it (a failure goes to the server as ``lifespan.startup.failed``;
  the app's startup does not run); the gateway stops once the app has completed
  ``lifespan.shutdown``; requests after that get a 503. An app that returns from the lifespan
  call without reading a message leaves the protocol to the middleware.
- *No lifespan* (``--lifespan off``, or an app that raises on it): the first request starts the
  gateway, under a lock (concurrent first requests start it once). Nothing then says the server
  is stopping: the resources live as long as the process and close with it (nothing is lost;
  caches are memory or Redis); ``await middleware.aclose()`` stops them earlier.

Per-view rules (:mod:`gateway.fastapi`): a passed request carries a :class:`ViewGate` in
``scope[VIEW_GATE]`` with the credentials the middleware read (the app's headers no longer
have them), so a view's own rule is decided from the same reading and refused with the same
pages. Metrics (``mode`` ``asgi``, per-view ``asgi_view``) and the access log:
:class:`gateway.http.observe.Observer`, as in the aiohttp driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import quote, unquote

from multidict import CIMultiDict

from gateway import access_log
from gateway.access.build import utc_now
from gateway.access.outcome import Credentials
from gateway.config import Settings, load_settings
from gateway.core.policy import AccessRule
from gateway.errors import PlatformUnavailable
from gateway.http.forward import private_response_headers
from gateway.http.observe import Observer
from gateway.http.policy import FrontEnd
from gateway.http.replies import NO_STORE, Reply, error_reply
from gateway.http.request import RequestView, wants_json
from gateway.http.steps import (
    Answer,
    Callback,
    Check,
    Decision,
    Login,
    Pass,
    Record,
    decision,
)
from gateway.metrics import Metrics
from gateway.runtime import Runtime, open_runtime
from gateway.store.cache import Clock

__all__ = ["VIEW_GATE", "PaywallMiddleware", "ViewGate", "request_view"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VIEW_GATE = "paywall.view_gate"
"""The scope key of a passed request's :class:`ViewGate`."""

log = logging.getLogger("gateway.asgi")

_SAFE_PATH = "/:@!$&'()*+,;=~"
_RESPONSE_START = frozenset({"http.response.start", "websocket.http.response.start"})
_SHUTDOWN_DONE = frozenset(
    {"lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"}
)


class _StartupFailed(Exception):
    """Raised into the app's lifespan ``receive`` when the gateway could not start."""


class _Stopped(RuntimeError):
    """The middleware was stopped (lifespan shutdown or :meth:`PaywallMiddleware.aclose`)."""


def request_view(scope: Scope) -> RequestView:
    """An ``http`` or ``websocket`` scope as the policy reads it: the raw target."""
    raw_path: bytes | None = scope.get("raw_path")
    # raw_path is optional in ASGI; without it, the path the app would route by (decoded).
    path = _path_text(raw_path) if raw_path else quote(scope["path"], safe=_SAFE_PATH)
    query: bytes = scope.get("query_string") or b""
    target = f"{path}?{query.decode('latin-1')}" if query else path
    headers: CIMultiDict[str] = CIMultiDict(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    )
    client = scope.get("client")
    scheme = scope.get("scheme") or "http"
    if scope["type"] == "websocket":
        method, scheme = "GET", "https" if scheme == "wss" else "http"
    else:
        method = scope["method"]
    return RequestView(method, target, headers, client[0] if client else None, scheme)


def _path_text(raw: bytes) -> str:
    """A raw path as text, bytes above ASCII percent-escaped: a raw byte and its escape are
    one reading (invalid UTF-8 is then refused the same way)."""
    if raw.isascii():
        return raw.decode("ascii")
    return "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in raw)


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _private(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    pairs = [
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in headers
    ]
    return _encode(private_response_headers(pairs))


class PaywallMiddleware:
    """Decides every ``http`` and ``websocket`` request before ``app`` sees it. ``config``: a
    TOML file or :class:`~gateway.config.Settings` (``[server] mode`` and ``upstream`` do not
    apply). ConfigError at once for an unusable configuration or paywall template."""

    def __init__(
        self,
        app: ASGIApp,
        config: str | Path | Settings,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.settings = config if isinstance(config, Settings) else load_settings(Path(config))
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock = clock if clock is not None else utc_now
        self._frontend = FrontEnd(self.settings, self._clock, label="asgi", inline=True)
        self._observer = Observer(self.metrics, self._frontend.trusted)
        self._callbacks = self._frontend.callback_receiver(self.metrics)
        self._lock = asyncio.Lock()
        self._resources: contextlib.AsyncExitStack | None = None
        self._runtime: Runtime | None = None
        self._closed = False

    @property
    def runtime(self) -> Runtime | None:
        """The running gateway's resources; None before start and after stop."""
        return self._runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            await self._request(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- resources --------------------------------------------------------------------------

    async def start(self) -> Runtime:
        """Start the gateway's resources on the running loop, once; RuntimeError after
        :meth:`aclose`."""
        runtime = self._runtime
        if runtime is not None:
            return runtime
        async with self._lock:
            if self._runtime is None:
                if self._closed:
                    raise _Stopped("the paywall middleware has been stopped")
                stack = contextlib.AsyncExitStack()
                settings, metrics = self.settings, self.metrics
                self._runtime = await stack.enter_async_context(
                    open_runtime(settings, metrics, self._clock)
                )
                self._resources = stack
            return self._runtime

    async def aclose(self, *, final: bool = True) -> None:
        """Stop the resources. ``final``: requests after this get a 503 instead of a restart."""
        async with self._lock:
            self._closed = self._closed or final
            stack, self._resources, self._runtime = self._resources, None, None
            if stack is not None:
                await stack.aclose()
        await asyncio.to_thread(access_log.flush)  # the lines of the last requests, written

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        failed = False
        received = False

        async def lifespan_receive() -> Message:
            nonlocal failed, received
            received = True
            message = await receive()
            if message["type"] == "lifespan.startup" and not await self._startup(send):
                failed = True
                raise _StartupFailed("the paywall gateway did not start")
            return message

        async def lifespan_send(message: Message) -> None:
            if failed:
                return  # the server already has the gateway's answer
            if message["type"] in _SHUTDOWN_DONE:
                await self.aclose()
            await send(message)

        try:
            await self.app(scope, lifespan_receive, lifespan_send)
        except Exception:
            if failed:
                return
            # The app does not do lifespan (the server goes on without it): requests start
            # the gateway lazily.
            await self.aclose(final=False)
            raise
        if not received:
            await self._own_lifespan(receive, send)

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        """The lifespan protocol for the gateway alone, for an app that ignores it."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not await self._startup(send):
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self, send: Send) -> bool:
        """Start on ``lifespan.startup``; a failure is reported to the server."""
        try:
            await self.start()
        except Exception as exc:
            log.exception("the paywall gateway did not start")
            message = f"paywall gateway: {type(exc).__name__}: {exc}"
            await send({"type": "lifespan.startup.failed", "message": message})
            return False
        return True

    # --- requests ---------------------------------------------------------------------------

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        view = request_view(scope)
        step = await self._decide(view, scope, receive)
        if isinstance(step, tuple):
            await self._pass(scope, receive, send, view, *step, started)
            return
        if step.record is not None:
            self._observer.decided(step.record, started)
        status = await send_reply(scope, receive, send, step.reply)
        if step.record is not None:
            self._observer.logged(view, step.record, status, started)

    async def _decide(
        self, view: RequestView, scope: Scope, receive: Receive
    ) -> Answer | tuple[Check, Pass]:
        """The policy's steps for one request, the access service asked in between."""
        step = self._frontend.route(view)
        if isinstance(step, Answer):
            return step
        if isinstance(step, Callback):
            answer = self._callbacks.admit(step)
            if answer is not None:
                return answer
            if scope["type"] != "http":  # a websocket handshake is a GET: admit refused it
                return self._callbacks.unavailable()
            body = await _read_limited(receive, self._callbacks.body_limit)
            try:
                runtime = await self.start()
            except _Stopped:
                return self._callbacks.unavailable()
            return await self._callbacks.handle(step, body, runtime.service)
        try:
            runtime = await self.start()
        except _Stopped:  # the server is shutting down: refuse, never pass undecided
            as_json = wants_json(view.headers.get("Accept", ""))
            reply = error_reply(as_json, 503, "unavailable", "The paywall gateway has stopped")
            reply.headers.append(("Cache-Control", NO_STORE))
            return Answer(reply, None)
        if isinstance(step, Login):
            try:
                identity = await runtime.service.login(step.token)
            except PlatformUnavailable:
                return self._frontend.login_answer(step, None, unavailable=True)
            return self._frontend.login_answer(step, identity, unavailable=False)
        result = self._frontend.answer(step, await runtime.service.check(step.access))
        return result if isinstance(result, Answer) else (step, result)

    async def _pass(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        view: RequestView,
        check: Check,
        step: Pass,
        started: float,
    ) -> None:
        self._observer.decided(step.record, started)
        status = 0

        async def send_through(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in _RESPONSE_START:
                status = message["status"]
                if step.private:
                    message = dict(message)
                    message["headers"] = _private(message.get("headers") or ())
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403  # refused by the app before the handshake
            await send(message)

        try:
            await self.app(self._app_scope(scope, view, check, step), receive, send_through)
        finally:
            self._observer.logged(view, step.record, status or 500, started)

    def _app_scope(self, scope: Scope, view: RequestView, check: Check, step: Pass) -> Scope:
        """The scope the app sees for a passed request."""
        headers = self._frontend.app_headers(view, step)
        inner = dict(scope)
        inner["path"] = unquote(step.path)
        inner["raw_path"] = step.path.encode("ascii")
        inner["query_string"] = step.query.encode("latin-1")
        inner["headers"] = _encode(headers.items())
        state = dict(scope.get("state") or {})  # the server's dict may be shared: a copy
        state["paywall"] = step.decision
        inner["state"] = state
        # A transfer token exchanged on the way (a public page) is this visitor's session now.
        session = (step.record.outcome and step.record.outcome.session_token) or (
            check.access.credentials.session_token
        )
        inner[VIEW_GATE] = ViewGate(self, check, Credentials(session_token=session))
        return inner

    # --- per-view rules ---------------------------------------------------------------------

    async def check_view(self, gate: ViewGate, rule: AccessRule) -> Decision | Reply:
        """``rule`` for the visitor of ``gate``: the decision, or the reply that refuses them
        (the page the middleware would send for a route with that rule)."""
        started = perf_counter()
        runtime = await self.start()
        outcome = await runtime.service.check_rule(gate.credentials, rule)
        verdict, customer = outcome.verdict, outcome.customer_id
        self._observer.decided(
            Record("asgi_view", verdict.value, outcome.reason, outcome.cache, customer), started
        )
        refusal = self._frontend.view_refusal(gate.check, outcome)
        return decision(outcome) if refusal is None else refusal


@dataclass(frozen=True, slots=True)
class ViewGate:
    """What a per-view rule needs of a passed request (``scope[VIEW_GATE]``): the middleware,
    the request as it decided it, and the visitor's session as it read it."""

    middleware: PaywallMiddleware
    check: Check
    credentials: Credentials

    async def require(self, rule: AccessRule) -> Decision | Reply:
        return await self.middleware.check_view(self, rule)


async def _read_limited(receive: Receive, limit: int) -> bytes:
    """At most ``limit`` bytes of an http request's body (the rest is never asked for)."""
    body = bytearray()
    while len(body) < limit:
        message = await receive()
        if message["type"] != "http.request":
            break  # http.disconnect
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body[:limit])


async def send_reply(scope: Scope, receive: Receive, send: Send, reply: Reply) -> int:
    """Send one of the gateway's own replies; the status the client got."""
    headers = _encode(reply.headers)
    headers.append((b"content-length", str(len(reply.body)).encode("ascii")))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status
    # A websocket whose handshake is still open: read the connect event, then refuse.
    message = await receive()
    if message["type"] != "websocket.connect":
        return 499  # the client went away first
    if "websocket.http.response" in (scope.get("extensions") or {}):
        start = {"type": "websocket.http.response.start", "status": reply.status}
        await send({**start, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": reply.body})
        return reply.status
    await send({"type": "websocket.close", "code": 1008})  # policy violation; HTTP 403
    return 403
