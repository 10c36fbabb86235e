"""What front-ends hand to the access service, and what they get back.

Front-ends (reverse proxy, auth_request endpoint, ASGI/WSGI middleware) translate HTTP into an
:class:`AccessRequest` and an :class:`AccessOutcome` back into HTTP; they never talk to the
platform or a cache themselves.
Values built on every request are slots dataclasses that are never changed after construction,
but not ``frozen``: a frozen dataclass's ``__init__`` sets each field through
``object.__setattr__``, about five times the cost of a plain one (1.3 against 0.27 us for six
fields), and a cached decision builds about a dozen of these. Their ``__init__`` is written
out (``init=False``): the one the dataclass decorator generates is interpreted Python even in
the compiled build (:mod:`gateway.compiled`), where a written-out one is compiled, about a
fifth of the cost (0.055 against 0.29 us for five fields, called from compiled code).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

CacheSource = Literal["hit", "miss", "stale", "none"]


class Verdict(enum.Enum):
    """The answer to "may this visitor see this?"."""

    PUBLIC = "public"  # no check needed: a public route
    GRANTED = "granted"  # the customer holds a usable access right
    DENIED = "denied"  # known customer without access, or a deny route -> 403
    UNAUTHENTICATED = "unauthenticated"  # no (valid) credential on a protected route -> 401
    UNAVAILABLE = "unavailable"  # platform down and no usable cached answer -> 503

    @property
    def text(self) -> str:
        """The member's value, read from the member itself: ``value`` is Enum's property, an
        interpreted call per access even from compiled code, and a decision reads it twice."""
        return self._value_


@dataclass(slots=True, init=False)  # built per request (module docstring)
class Credentials:
    """Credentials found on a request, already picked by precedence by the front-end.

    ``transfer_token`` (query parameter) wins over ``session_token`` (cookie, then
    ``X-plenigo-customer-session``, then ``Authorization: Bearer``).
    """

    transfer_token: str | None = None
    session_token: str | None = None

    def __init__(self, transfer_token: str | None = None, session_token: str | None = None) -> None:
        self.transfer_token = transfer_token
        self.session_token = session_token


@dataclass(slots=True, init=False)  # built per request (module docstring)
class AccessRequest:
    """One request to decide: method, the already-normalised path, and its credentials."""

    method: str
    path: str
    credentials: Credentials = field(default_factory=Credentials)

    def __init__(self, method: str, path: str, credentials: Credentials | None = None) -> None:
        self.method = method
        self.path = path
        self.credentials = Credentials() if credentials is None else credentials


@dataclass(slots=True, init=False)  # built per request (module docstring)
class AccessOutcome:
    """The service's answer.

    ``reason`` is one of the core's reasons (``granted``, ``customer_blocked``,
    ``platform_denied``, ``no_matching_item``, ``no_usable_item``) or the service's own:
    ``public_route``, ``route_denied``, ``no_credential``, ``invalid_credential``,
    ``identity_unavailable``, ``platform_unavailable`` (a fixed set: usable as a metric label).
    ``cache`` says where the answer came from: "hit", "miss", "stale" (served from an expired
    entry because the platform failed) or "none" (no lookup: public route, no credential).
    ``expires_at`` is when this answer may first change (for front-proxy caching), ``None`` when
    it must not be reused. ``session_token`` is set when a transfer token was exchanged: the
    front-end sets it as the session cookie. ``fail_open`` marks an ``on_api_error = allow``
    grant. ``decided_at`` is the service's clock reading the decision was made at (None for the
    answers that need no clock): a front-end times ``expires_at`` from it instead of reading the
    clock again.
    """

    verdict: Verdict
    reason: str
    customer_id: str | None = None
    cache: CacheSource = "none"
    expires_at: datetime | None = None
    session_token: str | None = None
    fail_open: bool = False
    decided_at: datetime | None = field(default=None, compare=False)

    def __init__(
        self,
        verdict: Verdict,
        reason: str,
        customer_id: str | None = None,
        cache: CacheSource = "none",
        expires_at: datetime | None = None,
        session_token: str | None = None,
        fail_open: bool = False,
        decided_at: datetime | None = None,
    ) -> None:
        self.verdict = verdict
        self.reason = reason
        self.customer_id = customer_id
        self.cache = cache
        self.expires_at = expires_at
        self.session_token = session_token
        self.fail_open = fail_open
        self.decided_at = decided_at
