"""Async client of the plenigo API v3: session validation, transfer-token exchange, hasAccess.

The :class:`aiohttp.ClientSession` is passed in (the app factory owns it; tests inject theirs), as
are the clock, the sleep, the jitter source and a per-attempt observer for metrics.

Everything that goes wrong is translated here into :mod:`gateway.errors`; no aiohttp, asyncio or
pydantic exception leaves this module. Messages name the endpoint and the status only: session
tokens, transfer tokens and the API token never appear in an exception or a log line (library
exceptions are not chained either, since theirs may quote the URL and so the token).

Status mapping (``*`` = retried, bounded by ``max_retries``, backoff with full jitter):

=====================  ========================  =========================  ======================
status                 validate_session          transfer_token             has_access
=====================  ========================  =========================  ======================
200                    customer id               customer session token     AccessPayload
400                    InvalidSession            InvalidTransferToken       BadPlatformResponse
401 errorCode 99015    PlatformAuthError         PlatformAuthError          PlatformAuthError
401 other              InvalidSession            InvalidTransferToken       PlatformAuthError
404                    BadPlatformResponse       InvalidTransferToken       UnknownCustomer
412                    BadPlatformResponse       InvalidTransferToken       BadPlatformResponse
429                    RateLimited *             RateLimited *              RateLimited *
500/502/503/504        PlatformUnavailable *     PlatformUnavailable        PlatformUnavailable *
timeout                PlatformUnavailable *     PlatformUnavailable [1]    PlatformUnavailable *
connection error       PlatformUnavailable *     PlatformUnavailable [1]    PlatformUnavailable *
anything else          BadPlatformResponse       BadPlatformResponse        BadPlatformResponse
bad JSON / schema [2]  BadPlatformResponse       BadPlatformResponse        BadPlatformResponse
unfit value [3]        BadPlatformResponse       BadPlatformResponse        BadPlatformResponse
=====================  ========================  =========================  ======================

[1] A transfer token is one-time: an attempt that may have reached the platform (read timeout,
    reset connection, 5xx) is never repeated, since a repeat could find the token already burnt
    and turn a good login into a failure. Only failures that prove the request was not sent
    (connection refused / DNS / TLS failure, connect timeout) and 429 are retried.
[2] Also a JSON object that names one key twice, at any depth (``"accessGranted": false, …,
    "accessGranted": true``): parsers disagree about which one counts (the validator keeps the
    last), so no reading is trusted. This holds for the 401 error bodies read for ``errorCode``.
[3] Every value the gateway passes on is checked where the answer is read
    (:mod:`gateway.platform.models`), never deeper: a ``customerId`` (validate, and the one
    hasAccess echoes) must be 1 to 18 ASCII digits, the exchanged ``customerSession`` an RFC 6265
    cookie value of 1 to 4096 characters. A value that could not go into a header, cookie, cache
    key or log line as it is never leaves this module. Like every ``BadPlatformResponse`` it is
    not retried: the platform would send it again.

Undocumented statuses (3xx, 403, 404 on the session endpoints, 400 on hasAccess, ...) are
:class:`BadPlatformResponse`: the platform (or something in front of it) broke its contract. The
gateway only sends customer ids the platform gave it, so a 400 there is a bug to see, not a denial.
``BadPlatformResponse`` is a ``PlatformUnavailable``, so front-ends answer it like an outage.
Redirects are not followed: they would carry the API token to wherever they point.

429: ``Retry-After`` (seconds or HTTP-date) is honoured when at most ``max_retry_after``; a
longer hint raises :class:`RateLimited` at once with that hint, and a 429 without a hint backs
off like a 5xx. The last 429 raises ``RateLimited``; other exhausted retries raise
``PlatformUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, NoReturn, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from yarl import URL

from gateway import strict_json
from gateway.config import PlatformSettings
from gateway.core.payload import AccessPayload
from gateway.errors import (
    BadPlatformResponse,
    InvalidSession,
    InvalidTransferToken,
    PlatformAuthError,
    PlatformUnavailable,
    RateLimited,
    UnknownCustomer,
)
from gateway.platform.models import (
    ACCESS_RIGHT_DATA_GRANTED,
    CUSTOMER_SESSION,
    CUSTOMER_SESSION_TOKEN,
    to_access_payload,
)

logger = logging.getLogger(__name__)

Endpoint = Literal["validate_session", "transfer_token", "has_access"]
Observer = Callable[[str, str, float], None]
"""``observer(endpoint, status, seconds)``, once per HTTP attempt; ``status`` is the HTTP status
as a string, ``"timeout"`` or ``"connection_error"``. It must not raise."""

API_TOKEN_REJECTED = 99015
"""plenigo's error code for "Api token provided is not authorized"."""

MAX_BODY_BYTES = 1 << 20
"""Answers larger than this are refused (a hasAccess answer is a few kilobytes)."""

_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_T = TypeVar("_T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _ErrorCode(BaseModel):
    """Just the ``errorCode`` of an error body; lenient, since only the code matters."""

    model_config = ConfigDict(extra="ignore")

    error_code: int | None = Field(default=None, alias="errorCode", strict=True)


_ERROR_CODE: TypeAdapter[_ErrorCode] = TypeAdapter(_ErrorCode)


@dataclass(frozen=True, slots=True)
class _Reply:
    """An HTTP answer: ``body`` is None when it exceeded :data:`MAX_BODY_BYTES`."""

    status: int
    body: bytes | None
    retry_after: str | None
    sent_at: datetime


class _NoAnswer(Exception):
    """An attempt ended without an HTTP status. ``unsent``: provably never reached the server."""

    def __init__(self, kind: Literal["timeout", "connection_error"], *, unsent: bool) -> None:
        super().__init__(kind)
        self.kind = kind
        self.unsent = unsent


class PlenigoClient:
    """The plenigo API v3 as an :class:`IdentityProvider` and an :class:`AccessProvider`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: PlatformSettings,
        *,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        observer: Observer | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._observer = observer
        base = URL(str(settings.base_url))
        self._base = base.with_query(None).with_fragment(None)
        self._headers = {
            "X-plenigo-token": settings.api_token.get_secret_value(),
            "Accept": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout, connect=settings.connect_timeout
        )

    # -- the three calls -------------------------------------------------------------------

    async def customer_for_session(self, session_token: str) -> str:
        """The customer id behind a customer session token (``GET /sessions/validate``)."""
        endpoint: Endpoint = "validate_session"
        if not session_token:
            raise InvalidSession(f"{endpoint}: empty session token")
        url = self._url("sessions", "validate").with_query({"sessionToken": session_token})
        reply = await self._call(endpoint, url, replayable=True)
        if reply.status == 200:
            return self._parse(endpoint, reply, CUSTOMER_SESSION).customer_id
        if reply.status == 401:
            self._raise_if_token_rejected(endpoint, reply)
            raise InvalidSession(f"{endpoint}: HTTP 401")
        if reply.status == 400:
            raise InvalidSession(f"{endpoint}: HTTP 400")
        self._unexpected(endpoint, reply)

    async def exchange_transfer_token(self, transfer_token: str) -> str:
        """Redeem a one-time transfer token for a customer session token.

        ``GET /sessions/transferToken``; never repeated once it may have reached the platform.
        """
        endpoint: Endpoint = "transfer_token"
        if not transfer_token:
            raise InvalidTransferToken(f"{endpoint}: empty transfer token")
        url = self._url("sessions", "transferToken").with_query({"transferToken": transfer_token})
        reply = await self._call(endpoint, url, replayable=False)
        if reply.status == 200:
            return self._parse(endpoint, reply, CUSTOMER_SESSION_TOKEN).customer_session
        if reply.status == 401:
            self._raise_if_token_rejected(endpoint, reply)
            raise InvalidTransferToken(f"{endpoint}: HTTP 401")
        if reply.status in (400, 404, 412):
            raise InvalidTransferToken(f"{endpoint}: HTTP {reply.status}")
        self._unexpected(endpoint, reply)

    async def check_access(
        self, customer_id: str, access_right_ids: Sequence[str]
    ) -> AccessPayload:
        """``GET /accessRights/{customerId}/hasAccess``, stamped with when it was sent.

        ``fetched_at`` is the clock reading just before the attempt that got the answer, so
        validity computed from it errs on the short side. ``access_right_ids`` must be non-empty
        and contain no commas (``ValueError``: a configuration bug, not a platform error). A
        customer id that cannot name a path segment (empty, ``.``, ``..``) is an
        :class:`UnknownCustomer` without asking.
        """
        endpoint: Endpoint = "has_access"
        ids = _query_ids(access_right_ids)
        if not customer_id.strip("."):
            raise UnknownCustomer(f"{endpoint}: not a customer id")
        url = self._url("accessRights", customer_id, "hasAccess").with_query(
            {"accessRightUniqueIds": ids}
        )
        reply = await self._call(endpoint, url, replayable=True)
        if reply.status == 200:
            model = self._parse(endpoint, reply, ACCESS_RIGHT_DATA_GRANTED)
            if model.customer_id is not None and model.customer_id != customer_id:
                raise BadPlatformResponse(f"{endpoint}: HTTP 200 about another customer")
            return to_access_payload(model, reply.sent_at, customer_id=customer_id)
        if reply.status == 404:
            raise UnknownCustomer(f"{endpoint}: HTTP 404")
        if reply.status == 401:
            raise PlatformAuthError(f"{endpoint}: HTTP 401, the API token was rejected")
        self._unexpected(endpoint, reply)

    # -- transport -------------------------------------------------------------------------

    def _url(self, *segments: str) -> URL:
        # Each segment is percent-encoded completely (``/``, ``?``, ``#``, ``%`` included), so
        # a value can never add path segments or a query; the base path (/api/v3.0) is kept.
        path = "/".join(quote(segment, safe="") for segment in segments)
        return self._base.with_path(f"{self._base.raw_path.rstrip('/')}/{path}", encoded=True)

    async def _call(self, endpoint: Endpoint, url: URL, *, replayable: bool) -> _Reply:
        """Send ``GET url`` with bounded retries; return the first non-retryable answer.

        ``replayable=False`` repeats only attempts that provably never reached the platform
        (or that it refused with 429 before doing anything).
        """
        retries = self._settings.max_retries
        attempt = 0
        while True:
            try:
                reply = await self._attempt(endpoint, url)
            except _NoAnswer as failure:
                if attempt >= retries or not (replayable or failure.unsent):
                    reason = "timed out" if failure.kind == "timeout" else "connection failed"
                    raise PlatformUnavailable(f"{endpoint}: {reason}") from None
                outcome: str = failure.kind
                delay = self._backoff(attempt)
            else:
                if reply.status == 429:
                    hint = self._retry_after(reply.retry_after)
                    if hint is not None and hint > self._settings.max_retry_after:
                        raise RateLimited(f"{endpoint}: HTTP 429, retry after {hint:.1f} s", hint)
                    if attempt >= retries:
                        raise RateLimited(f"{endpoint}: HTTP 429, retries exhausted", hint)
                    delay = hint if hint is not None else self._backoff(attempt)
                elif reply.status in _RETRY_STATUSES:
                    if attempt >= retries or not replayable:
                        raise PlatformUnavailable(f"{endpoint}: HTTP {reply.status}")
                    delay = self._backoff(attempt)
                else:
                    return reply
                outcome = f"HTTP {reply.status}"
            attempt += 1
            logger.debug(
                "platform %s: %s, retry %d of %d in %.3f s",
                endpoint,
                outcome,
                attempt,
                retries,
                delay,
            )
            await self._sleep(delay)

    async def _attempt(self, endpoint: Endpoint, url: URL) -> _Reply:
        """One HTTP attempt; every library failure becomes :class:`_NoAnswer`."""
        sent_at = self._clock()
        started = time.perf_counter()
        try:
            async with self._session.get(
                url,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                body = await _read_body(response)
                reply = _Reply(response.status, body, response.headers.get("Retry-After"), sent_at)
        except aiohttp.ConnectionTimeoutError:
            # Raised while connecting (or waiting for a pooled connection): nothing was sent.
            self._observe(endpoint, "timeout", started)
            raise _NoAnswer("timeout", unsent=True) from None
        except aiohttp.ClientConnectorError:
            # Refused, DNS, TLS handshake: raised by the connector, before any byte was sent.
            self._observe(endpoint, "connection_error", started)
            raise _NoAnswer("connection_error", unsent=True) from None
        except TimeoutError:  # asyncio.TimeoutError, aiohttp's ServerTimeoutError
            self._observe(endpoint, "timeout", started)
            raise _NoAnswer("timeout", unsent=False) from None
        except aiohttp.ClientError:  # reset, disconnected, malformed HTTP, payload errors
            self._observe(endpoint, "connection_error", started)
            raise _NoAnswer("connection_error", unsent=False) from None
        self._observe(endpoint, str(reply.status), started)
        return reply

    def _observe(self, endpoint: Endpoint, status: str, started: float) -> None:
        if self._observer is not None:
            self._observer(endpoint, status, time.perf_counter() - started)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)) for the n-th retry."""
        settings = self._settings
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2.0**attempt)
        return ceiling * self._jitter()

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds (delay-seconds or HTTP-date); None if absent or garbled."""
        if value is None:
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:  # HTTP-dates are GMT
                when = when.replace(tzinfo=UTC)
            seconds = (when - self._clock()).total_seconds()
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def _parse(endpoint: Endpoint, reply: _Reply, adapter: TypeAdapter[_T]) -> _T:
        if reply.body is None:
            raise BadPlatformResponse(f"{endpoint}: HTTP {reply.status}, body too large")
        try:
            model = adapter.validate_json(reply.body)
        except ValidationError as exc:
            raise BadPlatformResponse(
                f"{endpoint}: HTTP {reply.status}, {_describe(exc)}"
            ) from None
        repeated = _repeated_key(reply.body)
        if repeated is not False:
            # None: the standard library cannot read what the validator accepted (it reads a
            # superset, so this is not expected): one more disagreement, refused likewise.
            problem = "a key appears twice" if repeated else "JSON the parsers read differently"
            raise BadPlatformResponse(f"{endpoint}: HTTP {reply.status}, {problem}")
        return model

    @staticmethod
    def _raise_if_token_rejected(endpoint: Endpoint, reply: _Reply) -> None:
        if reply.body and _repeated_key(reply.body):
            # Which errorCode counts decides between "our API token" and "the visitor's
            # credential": neither reading is trusted.
            raise BadPlatformResponse(f"{endpoint}: HTTP {reply.status}, a key appears twice")
        if _error_code(reply.body) == API_TOKEN_REJECTED:
            raise PlatformAuthError(
                f"{endpoint}: HTTP 401 errorCode {API_TOKEN_REJECTED}, the API token was rejected"
            )

    @staticmethod
    def _unexpected(endpoint: Endpoint, reply: _Reply) -> NoReturn:
        raise BadPlatformResponse(f"{endpoint}: unexpected HTTP {reply.status}")


async def _read_body(response: aiohttp.ClientResponse) -> bytes | None:
    length = response.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _query_ids(access_right_ids: Sequence[str]) -> str:
    if isinstance(access_right_ids, str):
        raise TypeError("access_right_ids must be a sequence of ids, not one string")
    ids = list(dict.fromkeys(access_right_ids))
    if not ids:
        raise ValueError("at least one access-right id is needed")
    if any(not i or "," in i for i in ids):
        raise ValueError("access-right ids must be non-empty and contain no comma")
    return ",".join(ids)


def _repeated_key(body: bytes) -> bool | None:
    """Whether a JSON body names one key twice in an object, at any depth; None when the
    standard library cannot read it as JSON.

    pydantic reads such a body last-value-wins, other parsers first-value-wins: it has no single
    meaning. Keys are compared decoded (``"a"`` and ``"\\u0061"`` are one key). A second parse,
    of bodies already validated: microseconds, on the miss path only.
    """
    try:
        strict_json.loads(body)
    except strict_json.RepeatedKey:
        return True
    except (ValueError, RecursionError):
        return None
    return False


def _error_code(body: bytes | None) -> int | None:
    if not body:
        return None
    try:
        return _ERROR_CODE.validate_json(body).error_code
    except ValidationError:
        return None


def _describe(exc: ValidationError) -> str:
    """Where and why the body failed, without quoting it (it may hold a session token)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more
