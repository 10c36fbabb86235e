"""The aiohttp driver of the front-end policy: aiohttp requests in, policy steps, responses out.

Everything about HTTP is decided in :mod:`gateway.http.policy`; this module only moves bytes.
It does not use aiohttp's router to tell endpoints apart: that router matches a *decoded* path
(``/_paywall%2Fauth`` would reach the auth handler), a second reading of the path next to the
gateway's own. One catch-all route hands every request to :meth:`Driver.handle`, which asks the
policy what the request is (by the one normalised path) and runs that endpoint's handler.

Metrics and the access log: :class:`gateway.http.observe.Observer`, shared by every driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.access.outcome import AccessOutcome
from gateway.access.service import AccessService
from gateway.errors import PlatformUnavailable
from gateway.http.observe import Observer
from gateway.http.policy import FrontEnd
from gateway.http.request import RequestView
from gateway.http.steps import Answer, Callback, Check, Endpoint, Login, Pass, Step
from gateway.metrics import Metrics
from gateway.web.protocol import Later, Streamed, arrival_note, expect_continue
from gateway.web.proxy import UpstreamProxy
from gateway.web.responses import reply_bytes, reply_response

__all__ = ["Driver"]


def request_view(request: web.Request) -> RequestView:
    """An aiohttp request as the policy reads it: the raw target, never aiohttp's decoded path."""
    return RequestView(
        request.method, request.raw_path, request.headers, request.remote, request.scheme
    )


async def read_limited(request: web.Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the request body: never more, whatever the client sends."""
    body = bytearray()
    while len(body) < limit:
        chunk = await request.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class _Routed(NamedTuple):
    """:meth:`Driver.answer_now`'s note on a request it routed and did not answer: the
    handler of the same request (:func:`~gateway.web.protocol.arrival_note`) starts from it,
    and from the decision made on arrival, if one was (it counted in the metrics then)."""

    view: RequestView
    step: Step
    outcome: AccessOutcome | None = None


class Driver:
    """The request handlers; the service and upstream are attached when the app starts."""

    def __init__(self, frontend: FrontEnd, metrics: Metrics) -> None:
        self._frontend = frontend
        self._observer = Observer(metrics, frontend.trusted)
        self._callbacks = frontend.callback_receiver(metrics)
        self._service: AccessService | None = None
        self._upstream: UpstreamProxy | None = None
        self._soon: Callable[[Callable[[], None]], object] | None = None

    def attach(self, service: AccessService | None, upstream: UpstreamProxy | None) -> None:
        """Called on the server's event loop when the app starts."""
        self._service = service
        self._upstream = upstream
        self._soon = asyncio.get_running_loop().call_soon

    @property
    def service(self) -> AccessService:
        if self._service is None:
            raise RuntimeError("the gateway application has not started")
        return self._service

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The one handler of every request: what the policy says the request is, and its
        answer. A decision that this process holds in memory is made without awaiting
        (:meth:`AccessService.peek`); only a miss awaits :meth:`AccessService.check`.

        Also the listener's handler without aiohttp's router (:data:`DIRECT_HANDLER`), so it
        answers ``Expect`` itself, as the application would (the catch-all route's own expect
        handler does nothing, so both ways behave the same)."""
        started = perf_counter()
        if "Expect" in request.headers:
            refusal = await expect_continue(request)
            if refusal is not None:
                return refusal
        if not isinstance(request, web.Request):
            raise TypeError("the gateway's requests are made by its application")
        noted = arrival_note(request)
        outcome: AccessOutcome | None = None
        if (
            isinstance(noted, _Routed)
            and noted.view.method == request.method
            and noted.view.target == request.raw_path
        ):
            view, step, outcome = noted  # routed on arrival (answer_now), not answered there
        else:
            view = request_view(request)  # built once: the policy and the access log read it
            step = self._frontend.route(view)
        if isinstance(step, Check):
            service = self.service
            if outcome is None:
                outcome = service.peek(step.access, schedule=self._soon)
            if outcome is None:
                outcome = await service.check(step.access)
            answer = self._frontend.answer(step, outcome)
            if isinstance(answer, Pass):
                if step.endpoint is not Endpoint.PAGE:  # auth and deny answer themselves
                    raise RuntimeError(f"{step.endpoint} cannot pass a request")
                return await self.forward(request, view, answer, started)
            return self.reply(view, answer, started)
        if isinstance(step, Login):
            return await self.transfer(request, view, step, started)
        if isinstance(step, Callback):
            return await self.callback(request, view, step, started)
        return self.reply(view, step, started)

    def answer_now(
        self,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        peer: str | None,
        scheme: str,
    ) -> bytes | Later | _Routed:
        """The whole response to a request that this process can answer from memory alone, on
        arrival (:data:`~gateway.web.protocol.ANSWER_NOW`): what :meth:`handle` would send, with
        the same metrics and access-log line; for anything else (nothing recorded, nothing
        started) the request's view and step, which :meth:`handle` then starts from.

        Answered here: the auth and deny endpoints' decisions that
        :meth:`AccessService.peek` makes, and the policy's own replies (a 400, a 404); the
        auth and deny endpoints' other decisions (Redis, the platform) as a
        :class:`~gateway.web.protocol.Later`: :meth:`AccessService.check`, then the same
        answer. A page in proxy mode, as a Later too: the decision (made here if it can be),
        then the upstream's answer relayed (:meth:`UpstreamProxy.relay`) or the refusal. Not:
        the login hand-off, callbacks."""
        started = perf_counter()
        view = RequestView(method, target, headers, peer, scheme)
        step: Step = self._frontend.route(view)
        if isinstance(step, Check):
            if step.endpoint is Endpoint.PAGE:
                return self._page_now(view, step, started)
            outcome = self.service.peek(step.access, schedule=self._soon)
            if outcome is None:
                return Later(_Routed(view, step), lambda: self._checked(view, step, started))
            return self._sent(view, self._frontend.answer(step, outcome), started)
        if isinstance(step, Answer):
            return self._sent(view, step, started)
        return _Routed(view, step)

    def _page_now(self, view: RequestView, step: Check, started: float) -> bytes | Later | _Routed:
        """A page in proxy mode, on arrival: a refusal made from memory at once; the
        upstream's answer, or a decision that needs awaiting, later."""
        if self._upstream is None or view.method == "CONNECT":
            return _Routed(view, step)
        outcome = self.service.peek(step.access, schedule=self._soon)
        if outcome is None:
            return Later(_Routed(view, step), lambda: self._page_checked(view, step, started))
        answer = self._frontend.answer(step, outcome)
        if not isinstance(answer, Pass):
            return self._sent(view, answer, started)
        return Later(_Routed(view, step, outcome), lambda: self._relayed(view, answer, started))

    async def _page_checked(
        self, view: RequestView, step: Check, started: float
    ) -> bytes | Streamed:
        answer = self._frontend.answer(step, await self.service.check(step.access))
        if not isinstance(answer, Pass):
            return self._sent(view, answer, started)
        return await self._relayed(view, answer, started)

    async def _relayed(self, view: RequestView, answer: Pass, started: float) -> bytes | Streamed:
        """What :meth:`forward` sends for a page that passes (:meth:`UpstreamProxy.relay`),
        recorded the same way."""
        upstream = self._upstream
        if upstream is None:
            raise RuntimeError("proxy mode without an upstream")
        observer = self._observer
        observer.decided(answer.record, started)
        record = answer.record

        def done(status: int) -> None:
            observer.logged(view, record, status, started)

        return await upstream.relay(view, answer.path, answer.headers, done, private=answer.private)

    def _checked(self, view: RequestView, step: Check, started: float) -> asyncio.Future[bytes]:
        """A :class:`~gateway.web.protocol.Later`'s answer: what :meth:`handle` sends for a
        decision :meth:`AccessService.peek` could not make (:meth:`AccessService.check_soon`:
        an L2-only hit needs no task)."""
        return self.service.check_soon(
            step.access,
            lambda outcome: self._sent(view, self._frontend.answer(step, outcome), started),
        )

    def _sent(self, view: RequestView, answer: Answer | Pass, started: float) -> bytes:
        """The bytes of an auth or deny endpoint's ``answer`` (or a reply of the policy's
        own), recorded in the metrics and the access log."""
        if isinstance(answer, Pass):
            raise RuntimeError("only a page can pass a request")
        data = reply_bytes(answer.reply)
        if answer.record is not None:
            self._observer.decided(answer.record, started)
            self._observer.logged(view, answer.record, answer.reply.status, started)
        return data

    # --- the endpoints that are more than a decision -------------------------------------------

    async def transfer(
        self, request: web.Request, view: RequestView, login: Login, started: float
    ) -> web.Response:
        """``/_paywall/transfer``: exchange the token, set the cookie, 303."""
        try:
            identity = await self.service.login(login.token)
        except PlatformUnavailable:
            answer = self._frontend.login_answer(login, None, unavailable=True)
        else:
            answer = self._frontend.login_answer(login, identity, unavailable=False)
        return self.reply(view, answer, started)

    async def callback(
        self, request: web.Request, view: RequestView, step: Callback, started: float
    ) -> web.Response:
        """``POST /_paywall/callbacks/{secret}``: a platform callback (gateway.http.callbacks)."""
        receiver = self._callbacks
        answer = receiver.admit(step)
        if answer is None:
            body = await read_limited(request, receiver.body_limit)
            answer = await receiver.handle(step, body, self.service)
        return self.reply(view, answer, started)

    async def forward(
        self, request: web.Request, view: RequestView, step: Pass, started: float
    ) -> web.StreamResponse:
        self._observer.decided(step.record, started)
        upstream = self._upstream
        if upstream is None:
            raise RuntimeError("proxy mode without an upstream")
        response = await upstream.forward(request, step.path, step.headers, private=step.private)
        self._observer.logged(view, step.record, response.status, started)
        return response

    def reply(self, view: RequestView, answer: Answer, started: float) -> web.Response:
        response = reply_response(answer.reply)
        if answer.record is not None:
            self._observer.decided(answer.record, started)
            self._observer.logged(view, answer.record, response.status, started)
        return response
