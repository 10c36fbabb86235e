"""The values the front-end policy hands its drivers: what a request is (:class:`Check`,
:class:`Login`), and what to do about it (:class:`Answer`, :class:`Pass`), each with the
:class:`Record` that metrics and the access log are written from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.access.outcome import AccessOutcome, AccessRequest
from gateway.http.replies import Reply
from gateway.http.request import RequestView, Visitor

__all__ = [
    "Answer",
    "Callback",
    "Check",
    "Decision",
    "Endpoint",
    "Login",
    "Pass",
    "Record",
    "Step",
    "decision",
    "decision_headers",
]


class Endpoint(Enum):
    """What a request is to the gateway."""

    PAGE = "page"
    AUTH = "auth"
    DENY = "deny"
    TRANSFER = "transfer"


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Record:
    """What the metrics and the access log say about one request."""

    mode: str
    verdict: str
    reason: str
    cache: str = "none"
    customer_id: str | None = None
    path: str = ""
    outcome: AccessOutcome | None = None

    def __init__(
        self,
        mode: str,
        verdict: str,
        reason: str,
        cache: str = "none",
        customer_id: str | None = None,
        path: str = "",
        outcome: AccessOutcome | None = None,
    ) -> None:
        self.mode = mode
        self.verdict = verdict
        self.reason = reason
        self.cache = cache
        self.customer_id = customer_id
        self.path = path
        self.outcome = outcome


@dataclass(frozen=True, slots=True, init=False)  # built per request (gateway.core.payload)
class Decision:
    """The decision an allowed request carries to the app (``request.state.paywall`` under
    ASGI, ``environ["paywall.decision"]`` under WSGI): ``access`` is ``public``, ``granted``
    or ``fail-open``; ``cache`` the cache result (``hit``, ``miss``, ``stale``, ``none``)."""

    customer_id: str | None
    access: str
    cache: str
    reason: str

    def __init__(self, customer_id: str | None, access: str, cache: str, reason: str) -> None:
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "access", access)
        object.__setattr__(self, "cache", cache)
        object.__setattr__(self, "reason", reason)


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Check:
    """Ask the access service ``access``, then :meth:`FrontEnd.answer` with the outcome."""

    endpoint: Endpoint
    access: AccessRequest
    request: RequestView
    visitor: Visitor
    mode: str

    def __init__(
        self,
        endpoint: Endpoint,
        access: AccessRequest,
        request: RequestView,
        visitor: Visitor,
        mode: str,
    ) -> None:
        self.endpoint = endpoint
        self.access = access
        self.request = request
        self.visitor = visitor
        self.mode = mode


@dataclass(frozen=True, slots=True)
class Login:
    """``/_paywall/transfer``: exchange ``token`` (:meth:`AccessService.login`), then
    :meth:`FrontEnd.login_answer`."""

    token: str
    target: str
    visitor: Visitor


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Answer:
    """A reply of the gateway's own, with what to record about it."""

    reply: Reply
    record: Record | None

    def __init__(self, reply: Reply, record: Record | None) -> None:
        self.reply = reply
        self.record = record


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Pass:
    """Let the request through: to ``path`` (normalised, percent-encoded) with ``query`` (the
    visitor's, without the transfer token), ``headers`` added after every client-sent
    ``X-Paywall-*`` is gone; ``private``: only this visitor may see the answer (paid content),
    so no shared cache may keep it."""

    path: str
    query: str
    headers: dict[str, str]
    private: bool
    decision: Decision
    record: Record

    def __init__(
        self,
        path: str,
        query: str,
        headers: dict[str, str],
        private: bool,
        decision: Decision,
        record: Record,
    ) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.private = private
        self.decision = decision
        self.record = record


@dataclass(frozen=True, slots=True)
class Callback:
    """``/_paywall/callbacks[/{secret}]``: ``path_secret`` is the path segment after
    ``/_paywall/callbacks/`` (None when there is none). The driver runs it with a
    :class:`~gateway.http.callbacks.CallbackReceiver`: ``admit``, read the body, ``handle``."""

    request: RequestView
    path_secret: str | None


Step = Check | Login | Answer | Callback


def decision_headers(outcome: AccessOutcome) -> dict[str, str]:
    """The decision as request headers for the upstream or app (and ``auth_request_set``)."""
    access = "fail-open" if outcome.fail_open else outcome.verdict.text
    headers = {"X-Paywall-Access": access, "X-Paywall-Cache": outcome.cache}
    if outcome.customer_id is not None:
        headers["X-Paywall-Customer-Id"] = outcome.customer_id
    return headers


def decision(outcome: AccessOutcome) -> Decision:
    access = "fail-open" if outcome.fail_open else outcome.verdict.text
    return Decision(outcome.customer_id, access, outcome.cache, outcome.reason)
