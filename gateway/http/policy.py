"""The front-end policy: what the gateway decides about HTTP, written once for every driver.

A driver (the aiohttp server, the ASGI middleware, the WSGI middleware) does only I/O:

1. it turns its framework's request into a :class:`~gateway.http.request.RequestView` and asks
   :meth:`FrontEnd.route` what the request is;
2. for a :class:`Check` it asks the access service ``check.access`` and hands the outcome to
   :meth:`FrontEnd.answer`; for a :class:`Login` it asks the service to exchange the token and
   hands the identity to :meth:`FrontEnd.login_answer`;
3. it sends the :class:`~gateway.http.replies.Reply` as it is, or, for a :class:`Pass`, lets
   the request through to the upstream or the app with ``Pass.headers`` added (the decision
   as ``X-Paywall-*``), the path and query of ``Pass``, and, when ``Pass.private``, the
   answer's Cache-Control made private.

Every step carries a :class:`Record` (the metrics label, verdict, reason, cache result,
customer id and path of the access log), so metrics and logs are one function in each driver.

Endpoints, by the *normalised* path (one reading: a framework router would decode the path its
own way): ``/_paywall/callbacks/{secret}`` (the platform's callbacks,
:mod:`gateway.http.callbacks`; only with ``[callbacks] secret``) and ``/_paywall/transfer``
(the login hand-off) in every mode; ``/_paywall/auth`` and
``/_paywall/deny`` in ``auth_request`` mode; anything else under ``/_paywall/`` is a 404; every
other path is a page: decided and passed (``inline``: proxy mode and the middleware) or a 404
(``auth_request`` mode serves no pages).

Malformed input is a 400 (at ``/_paywall/auth``, whose caller only understands 2xx/401/403: a
403 with ``X-Paywall-Access: bad_request``, which ``/_paywall/deny`` then turns into the 400).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from string import Template
from urllib.parse import urlsplit

from multidict import CIMultiDict

from gateway.access.identity import Identity
from gateway.access.outcome import AccessOutcome, AccessRequest, Credentials, Verdict
from gateway.config import Settings
from gateway.errors import BadRequest
from gateway.http.callbacks import CallbackReceiver, callback_step
from gateway.http.credentials import (
    SESSION_HEADER,
    Headers,
    query_values,
    session_token,
    transfer_token,
)
from gateway.http.forward import forward_headers, last_element, strip_query_param
from gateway.http.forwarded import TrustedProxies
from gateway.http.names import (
    HOST,
    X_FORWARDED_HOST,
    X_FORWARDED_METHOD,
    X_FORWARDED_PROTO,
    X_FORWARDED_URI,
    X_ORIGINAL_METHOD,
    X_ORIGINAL_URI,
)
from gateway.http.replies import (
    NO_STORE,
    Pages,
    Reply,
    bad_request_reply,
    load_template,
    text_reply,
)
from gateway.http.request import (
    RequestView,
    Visitor,
    split_target,
    valid_host,
    valid_method,
    wants_json,
)
from gateway.http.steps import (
    Answer,
    Check,
    Endpoint,
    Login,
    Pass,
    Record,
    Step,
    decision,
    decision_headers,
)
from gateway.metrics import Metrics
from gateway.store.cache import Clock

__all__ = ["PREFIX", "FrontEnd"]

log = logging.getLogger("gateway.web.app")

PREFIX = "/_paywall/"
_PASS = (Verdict.GRANTED, Verdict.PUBLIC)
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def _once(headers: Headers, name: str) -> Sequence[str]:
    """Every value of header ``name``; BadRequest when there is more than one."""
    values = headers.getall(name, ())
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values


def _first(values: Sequence[str]) -> str | None:
    """``headers.get(name)`` of ``values = headers.getall(name, ())``."""
    return values[0] if values else None


class FrontEnd:
    """The policy for one configuration. ``inline``: pages are decided and passed (proxy mode,
    middleware); otherwise ``settings.server.mode`` says (``auth_request`` serves no pages).
    ``label`` is the metrics label of decided pages (``proxy``, ``asgi``, ``wsgi``)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        label: str = "proxy",
        inline: bool | None = None,
        template: Template | None = None,
    ) -> None:
        server = settings.server
        self._server = server
        self._clock = clock
        self._label = label
        # Not "_inline": mypyc names the C field after the attribute with one more "_", and
        # gcc reads "__inline" as a keyword (the compiled build, gateway/compiled.py).
        self._pages_inline = server.mode == "proxy" if inline is None else inline
        self._auth_mode = not self._pages_inline
        self._trusted = TrustedProxies(server.trusted_proxies)
        self._pages = Pages(server, template if template is not None else load_template(server))
        self._transfer_param = server.transfer_token_param
        self._cookie = server.session_cookie
        self._path_parameters = server.allow_path_parameters
        self._callbacks = settings.callbacks
        self._callbacks_on = bool(settings.callbacks.secret.get_secret_value())

    @property
    def trusted(self) -> TrustedProxies:
        return self._trusted

    @property
    def pages(self) -> Pages:
        return self._pages

    def callback_receiver(self, metrics: Metrics) -> CallbackReceiver:
        """The receiver a driver runs :class:`~gateway.http.steps.Callback` steps with."""
        return CallbackReceiver(self._callbacks, self._trusted, metrics)

    # --- what a request is ----------------------------------------------------------------------

    def route(self, request: RequestView) -> Step:
        """The first step for ``request``."""
        mode = self._label if self._pages_inline else "auth_request"
        try:
            path, query = self._split(request.target)
        except BadRequest as exc:
            return self.bad_request(request, mode, str(exc))
        if path.startswith(PREFIX):
            return self._internal(request, path, query)
        if not self._pages_inline:
            return Answer(
                text_reply(404, "Not found: in auth_request mode only /_paywall/* is served\n"),
                None,
            )
        try:
            creds = Credentials(
                transfer_token(query, self._transfer_param),
                session_token(request.headers, self._cookie),
            )
        except BadRequest as exc:
            return self.bad_request(request, mode, str(exc))
        visitor = Visitor(request.method, path, query, "", None, request.headers)
        access = AccessRequest(request.method, path, creds)
        return Check(Endpoint.PAGE, access, request, visitor, mode)

    def _internal(self, request: RequestView, path: str, query: str) -> Step:
        if self._callbacks_on:  # off: the endpoint is an unknown path like any other
            callback = callback_step(request, path)
            if callback is not None:
                return callback
        if path == "/_paywall/transfer":
            return self._transfer(request, path, query)
        if self._auth_mode:
            if path == "/_paywall/auth":
                return self._auth(request)
            if path == "/_paywall/deny":
                return self._deny(request)
        return Answer(text_reply(404, "Not found\n"), None)

    def _split(self, target: str) -> tuple[str, str]:
        return split_target(target, path_parameters=self._path_parameters)

    # --- the visitor ----------------------------------------------------------------------------

    def direct_visitor(self, request: RequestView, path: str, query: str) -> Visitor:
        """The visitor of a request made to the gateway itself (pages, /_paywall/*)."""
        headers = request.headers
        scheme, host = request.scheme, headers.get(HOST)
        if self._trusted.is_trusted(request.peer):
            scheme = last_element(headers.getall(X_FORWARDED_PROTO, [])) or scheme
            host = last_element(headers.getall(X_FORWARDED_HOST, [])) or host
        scheme = scheme if scheme in ("http", "https") else "http"
        return Visitor(request.method, path, query, scheme, valid_host(host), headers)

    def _original_visitor(self, request: RequestView) -> Visitor | str:
        """The visitor's request that nginx / Traefik / Caddy ask about (auth_request mode), or
        why the gateway cannot tell. BadRequest for an ambiguous one."""
        if not self._trusted.is_trusted(request.peer):
            return "untrusted_proxy"
        headers = request.headers
        # Where a front proxy names the visitor's request; each must come once (which one did
        # the proxy mean? its cache key and the gateway might differ), and each is read once
        # (a multidict lookup is the dear part here).
        uri = _once(headers, X_ORIGINAL_URI)
        forwarded_uri = _once(headers, X_FORWARDED_URI)
        original_method = _once(headers, X_ORIGINAL_METHOD)
        forwarded_method = _once(headers, X_FORWARDED_METHOD)
        target = _first(uri) or _first(forwarded_uri)
        if not target:
            return "no_original_uri"
        method = _first(original_method) or _first(forwarded_method) or "GET"
        path, query = self._split(target)  # BadRequest for an ambiguous path
        scheme = last_element(headers.getall(X_FORWARDED_PROTO, [])) or request.scheme
        scheme = scheme if scheme in ("http", "https") else "http"
        host = last_element(headers.getall(X_FORWARDED_HOST, [])) or headers.get(HOST)
        return Visitor(valid_method(method), path, query, scheme, valid_host(host), headers)

    def has_transfer(self, visitor: Visitor) -> bool:
        return bool(visitor.query) and bool(query_values(visitor.query, self._transfer_param))

    # --- auth_request mode ------------------------------------------------------------------

    def _auth(self, request: RequestView) -> Step:
        """GET /_paywall/auth: 200 / 401 / 403 (503 if configured) about the original request."""
        try:
            visitor = self._original_visitor(request)
            if isinstance(visitor, str):
                return self._auth_refusal(request, "denied", visitor)
            creds = Credentials(None, session_token(visitor.headers, self._cookie))
        except BadRequest as exc:
            return self._auth_refusal(request, "bad_request", str(exc))
        if self.has_transfer(visitor):
            # Only an answer that can set a cookie may spend the one-time token: refuse, and
            # nginx's error_page sends the visitor to /_paywall/deny, which does the hand-off.
            # This also covers spellings of the parameter a front proxy's own match misses.
            return self._auth_refusal(request, "unauthenticated", "transfer_token", status=401)
        access = AccessRequest(visitor.method, visitor.path, creds)
        return Check(Endpoint.AUTH, access, request, visitor, "auth_request")

    def _auth_refusal(
        self, request: RequestView, access: str, reason: str, *, status: int = 403
    ) -> Answer:
        reply = text_reply(
            status,
            f"{reason}\n",
            ("X-Paywall-Access", access),
            ("X-Paywall-Reason", reason if access != "bad_request" else access),
            ("X-Accel-Expires", "0"),
            ("Cache-Control", NO_STORE),
        )
        if access == "denied":
            log.warning("auth request refused (%s) from %s", reason, request.peer)
        return Answer(reply, Record("auth_request", access, reason))

    def _deny(self, request: RequestView) -> Step:
        """Where nginx's error_page sends a refused visitor: the answer proxy mode would give."""
        try:
            visitor = self._original_visitor(request)
            if isinstance(visitor, str):
                log.warning("deny page refused (%s) from %s", visitor, request.peer)
                return Answer(text_reply(403, "Forbidden\n"), None)
            creds = Credentials(
                transfer_token(visitor.query, self._transfer_param),
                session_token(visitor.headers, self._cookie),
            )
        except BadRequest as exc:
            return self.bad_request(request, "auth_deny", str(exc))
        access = AccessRequest(visitor.method, visitor.path, creds)
        return Check(Endpoint.DENY, access, request, visitor, "auth_deny")

    def reuse_seconds(self, outcome: AccessOutcome) -> int:
        """How long the front proxy may reuse a grant: the decision's own validity, capped."""
        cap = self._server.auth_cache_max_seconds
        if outcome.verdict is Verdict.PUBLIC:
            return cap
        if outcome.expires_at is None or outcome.fail_open:
            return 0
        now = outcome.decided_at or self._clock()
        remaining = (outcome.expires_at - now).total_seconds()
        return max(0, min(cap, math.floor(remaining)))

    # --- after the access service ---------------------------------------------------------------

    def answer(self, check: Check, outcome: AccessOutcome) -> Pass | Answer:
        """What to do with ``check`` now that the service decided ``outcome``."""
        visitor = check.visitor
        record = _record(check.mode, visitor.path, outcome)
        if check.endpoint is Endpoint.AUTH:
            return Answer(self._auth_reply(visitor, outcome), record)
        if visitor.method in _SAFE_METHODS and self.has_transfer(visitor):
            handoff = self._handoff(visitor, outcome)
            if handoff is not None:
                return Answer(handoff, record)
        if check.endpoint is Endpoint.DENY:
            if outcome.verdict in _PASS:
                # Allowed by now (a login or purchase in between): let the visitor ask again.
                return Answer(self._pages.redirect(self._pages.location(visitor)), record)
            return Answer(self._pages.deny(visitor, outcome, login_redirect=True), record)
        if outcome.verdict in _PASS:
            query = strip_query_param(visitor.query, self._transfer_param)
            # Granted content is this visitor's: no shared cache may keep it for others.
            private = outcome.verdict is Verdict.GRANTED
            return Pass(
                visitor.path,
                query,
                decision_headers(outcome),
                private,
                decision(outcome),
                record,
            )
        direct = self.direct_visitor(check.request, visitor.path, visitor.query)
        return Answer(self._pages.deny(direct, outcome, login_redirect=True), record)

    def app_headers(self, request: RequestView, step: Pass) -> CIMultiDict[str]:
        """The request headers an in-process app (ASGI, WSGI) sees for a passed request."""
        server = self._server
        return forward_headers(
            request.headers.items(),
            step.headers,
            peer_trusted=self._trusted.is_trusted(request.peer),
            session_cookie=server.session_cookie,
            session_header=SESSION_HEADER,
            transfer_param=server.transfer_token_param,
            forward_session_token=server.forward_session_token,
            proxy=False,
        )

    def view_refusal(self, check: Check, outcome: AccessOutcome) -> Reply | None:
        """A per-view rule's outcome for the page of ``check``: None when it passes, else the
        reply that refuses the visitor (the page a route with that rule would give)."""
        if outcome.verdict in _PASS:
            return None
        visitor = check.visitor
        direct = self.direct_visitor(check.request, visitor.path, visitor.query)
        return self._pages.deny(direct, outcome, login_redirect=True)

    def _auth_reply(self, visitor: Visitor, outcome: AccessOutcome) -> Reply:
        if outcome.verdict in _PASS:
            headers = list(decision_headers(outcome).items())
            headers.append(("X-Accel-Expires", str(self.reuse_seconds(outcome))))
            return Reply(200, headers)
        reply = self._pages.deny(visitor, outcome, login_redirect=False)
        # nginx copies a 401's WWW-Authenticate into whatever the visitor finally gets (the
        # login redirect, or the deny page's own 401: twice); the deny page sets its own.
        headers = [(k, v) for k, v in reply.headers if k.lower() != "www-authenticate"]
        status = reply.status
        if outcome.verdict is Verdict.UNAVAILABLE:
            status = self._server.auth_unavailable_status
        headers.extend(decision_headers(outcome).items())
        headers.append(("X-Paywall-Reason", outcome.reason))
        headers.append(("X-Accel-Expires", "0"))
        return Reply(status, headers, reply.body)

    def _handoff(self, visitor: Visitor, outcome: AccessOutcome) -> Reply | None:
        """A visitor arriving with a transfer token leaves for the same URL without it: with
        the session cookie when the exchange worked. Unauthenticated and unavailable visitors
        get their usual answer (whose return URL is already without the token)."""
        if outcome.session_token is not None:
            return self._pages.redirect(
                self._pages.location(visitor), session=outcome.session_token
            )
        if outcome.verdict in (Verdict.GRANTED, Verdict.PUBLIC, Verdict.DENIED):
            return self._pages.redirect(self._pages.location(visitor))
        return None

    # --- the login hand-off -----------------------------------------------------------------

    def _transfer(self, request: RequestView, path: str, query: str) -> Step:
        """GET /_paywall/transfer?transferToken=…&return_to=…: exchange, cookie, 303."""
        if request.method not in _SAFE_METHODS:
            allow = ", ".join(sorted(_SAFE_METHODS))
            return Answer(text_reply(405, "Method not allowed\n", ("Allow", allow)), None)
        visitor = self.direct_visitor(request, path, query)
        try:
            token = transfer_token(query, self._transfer_param)
            session_token(request.headers, self._cookie)  # refuse ambiguous credentials here too
            if token is None:
                raise BadRequest(f"{self._transfer_param} is missing")
            target = self._return_target(request, visitor, query)
        except BadRequest as exc:
            return self.bad_request(request, "transfer", str(exc))
        return Login(token, target, visitor)

    def login_answer(self, login: Login, identity: Identity | None, *, unavailable: bool) -> Answer:
        """The hand-off's answer once the service exchanged the token (``identity``; None when
        the token was not valid) or could not (``unavailable``)."""
        if unavailable:
            outcome = AccessOutcome(Verdict.UNAVAILABLE, "identity_unavailable")
        else:
            outcome = AccessOutcome(
                Verdict.GRANTED if identity else Verdict.UNAUTHENTICATED,
                "login" if identity else "invalid_credential",
                customer_id=identity.customer_id if identity else None,
            )
        record = _record("transfer", login.visitor.path, outcome)
        if identity is not None and identity.session_token is not None:
            return Answer(
                self._pages.redirect(login.target, session=identity.session_token), record
            )
        landing = _landing_visitor(login.visitor, login.target)
        return Answer(self._pages.deny(landing, outcome, login_redirect=True), record)

    def _return_target(self, request: RequestView, visitor: Visitor, query: str) -> str:
        values = query_values(query, self._server.login_return_param)
        if len(set(values)) > 1:
            raise BadRequest(f"{self._server.login_return_param} given more than once")
        if values and values[0]:
            return self._pages.return_target(values[0], visitor)
        # nginx may send the visitor here with the original request in X-Original-URI.
        original = request.headers.get("X-Original-URI")
        if original and self._trusted.is_trusted(request.peer):
            path, original_query = self._split(original)
            return self._pages.location(
                Visitor("GET", path, original_query, "", None, request.headers)
            )
        return "/"

    # --- shared -----------------------------------------------------------------------------

    def bad_request(self, request: RequestView, mode: str, message: str) -> Answer:
        as_json = wants_json(request.headers.get("Accept", ""))
        return Answer(bad_request_reply(as_json, message), Record(mode, "bad_request", message))


def _record(mode: str, path: str, outcome: AccessOutcome) -> Record:
    return Record(
        mode,
        outcome.verdict.text,
        outcome.reason,
        outcome.cache,
        outcome.customer_id,
        path,
        outcome,
    )


def _landing_visitor(visitor: Visitor, target: str) -> Visitor:
    """The visitor as if already on ``target`` (a checked return target), for the login
    redirect's return URL."""
    parts = urlsplit(target)
    scheme = parts.scheme or visitor.scheme
    host = parts.netloc or visitor.host
    return Visitor("GET", parts.path, parts.query, scheme, host, visitor.headers)
