"""What one simulator app holds: options, the data, the clock, the rng, the transfer tokens
and the call counter.

Stored on the application under :data:`STATE` (a typed ``web.AppKey``); nothing is global.
"""

from __future__ import annotations

import hmac
import itertools
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.sandbox import api_errors
from gateway.sandbox.callbacks import CallbackSender
from gateway.sandbox.calls import CallCounter
from gateway.sandbox.model import Customer, SandboxData, Session, Subscription

Clock = Callable[[], datetime]


@dataclass
class SandboxOptions:
    """How the simulator behaves beyond its data.

    ``error_rate`` and ``rate_limit_rate`` are fractions of requests (0-1) answered 500 and 429;
    ``callback_url``, when set, receives the callbacks the platform would send
    (:mod:`gateway.sandbox.callbacks`), each tried up to ``callback_tries`` times with a backoff
    doubling from ``callback_backoff`` seconds.
    """

    api_token: str | None = None
    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    time_zone: str = "Europe/Berlin"
    transfer_token_ttl: float = 30.0
    callback_url: str | None = None
    callback_tries: int = 5
    callback_backoff: float = 0.1

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_limit_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_rate + self.rate_limit_rate > 1.0:
            raise ValueError("error_rate + rate_limit_rate must not exceed 1")
        if self.latency < 0 or self.transfer_token_ttl <= 0 or self.retry_after < 0:
            raise ValueError("latency and retry_after must be >= 0, transfer_token_ttl > 0")
        if self.callback_tries < 1 or self.callback_backoff < 0:
            raise ValueError("callback_tries must be >= 1, callback_backoff >= 0")


@dataclass(frozen=True, slots=True)
class TransferToken:
    session_token: str
    expires: datetime


@dataclass
class SandboxState:
    data: SandboxData
    options: SandboxOptions
    zone: ZoneInfo
    clock: Clock
    rng: random.Random
    transfer_tokens: dict[str, TransferToken] = field(default_factory=dict)
    callbacks: CallbackSender = field(default_factory=lambda: CallbackSender(None))
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    order_ids: Iterator[int] = field(default_factory=lambda: itertools.count(5001))
    calls: CallCounter = field(default_factory=CallCounter)

    def now(self) -> datetime:
        current = self.clock()
        if current.tzinfo is None:
            raise ValueError("the sandbox clock must return timezone-aware datetimes")
        return current.astimezone(UTC)

    # --- cross-cutting checks, in the order the endpoint wrapper applies them ---------------

    def check_api_token(self, request: web.Request) -> None:
        expected = self.options.api_token
        if expected is None:
            return
        given = request.headers.get("X-plenigo-token", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise api_errors.unauthorized_token()

    def inject_failure(self) -> None:
        """Answer a random share of requests with 500 or 429, drawing once from the rng."""
        error_rate, limit_rate = self.options.error_rate, self.options.rate_limit_rate
        if error_rate <= 0 and limit_rate <= 0:
            return
        draw = self.rng.random()
        if draw < error_rate:
            raise api_errors.internal_error()
        if draw < error_rate + limit_rate:
            raise api_errors.too_many_requests(self.options.retry_after)

    # --- lookups ------------------------------------------------------------------------------

    def customer(self, customer_id: str) -> Customer:
        customer = self.data.customers.get(customer_id)
        if customer is None:
            raise api_errors.not_found()
        return customer

    def valid_session(self, token: str) -> Session:
        session = self.data.sessions.get(token)
        if session is None or not session.valid_at(self.now()):
            raise api_errors.invalid_session()
        return session

    def create_session(self, customer_id: str) -> Session:
        now = self.now()
        session = Session(
            token=secrets.token_urlsafe(32),
            session_id=secrets.token_urlsafe(20),
            customer_id=customer_id,
            created=now,
        )
        self.data.sessions[session.token] = session
        return session

    def issue_transfer_token(self, session: Session) -> str:
        now = self.now()
        # Forget expired tokens so a long-running demo does not accumulate them.
        for token in [t for t, v in self.transfer_tokens.items() if v.expires <= now]:
            del self.transfer_tokens[token]
        token = secrets.token_urlsafe(20)
        ttl = timedelta(seconds=self.options.transfer_token_ttl)
        self.transfer_tokens[token] = TransferToken(session.token, now + ttl)
        return token

    def redeem_transfer_token(self, token: str) -> Session:
        """One-time: a token is gone after its first use, valid or not."""
        entry = self.transfer_tokens.pop(token, None)
        now = self.now()
        if entry is None or now >= entry.expires:
            raise api_errors.invalid_transfer_token()
        session = self.data.sessions.get(entry.session_token)
        if session is None or not session.valid_at(now):
            raise api_errors.invalid_transfer_token()
        return session

    def customer_changed(self, customer: Customer) -> None:
        """Note a change to ``customer``'s access rights. No callback: the seeds document none
        for direct access-right edits (what bounds staleness then is the gateway's max_ttl)."""
        customer.changed_date = self.now()


STATE = web.AppKey("sandbox_state", SandboxState)
