"""Pydantic models of the platform's JSON payloads, and their conversion into the core's types.

Only the fields the gateway uses are declared; everything else the API sends (and it keeps adding
fields) is ignored. The declared fields are validated strictly: a string where a boolean belongs,
or a number where a timestamp belongs, is an error, never coerced.

Parsing rules (the API schema and its examples disagree in places, so these are decisions):

* **Instants** (``lifeTimeStart``/``End``, ``pausedTimeStart``/``End``, ``maxCacheDate``,
  ``created``) are RFC 3339 date-times. A timestamp without an offset is taken as **UTC**, so
  every datetime that leaves this module is timezone-aware. ``null`` means "open on that side".
* **Daily window bounds** (``accessTimeStart``/``End``) are wall-clock times ``"HH:MM[:SS[.f]]"``
  (the schema says ``date-time``, every example says ``"06:00:00"``). They are read in the
  gateway's configured time zone, so an offset attached to them (``"06:00:00Z"``) is dropped,
  not converted: converting a bare time between zones is meaningless without a date (DST). If the
  platform ever sends a full date-time there, its wall-clock time part *as written* is used,
  offset dropped likewise, and the date is ignored.
* **Flags**: a missing or ``null`` ``accessGranted`` is ``False`` (nothing is granted that the
  platform did not grant explicitly); a missing or ``null`` ``blocked`` / ``customerBlocked`` is
  ``False`` (the item's own ``accessGranted`` still decides). Java back ends emit ``null`` for
  unset booleans, hence ``null`` is treated like missing rather than as a type error.
* ``items: null`` is read as no items.

Values the gateway passes on (into a header, a cookie, a cache key or a log line) are checked here,
where the payload is read, so nothing deeper ever sees one it could not use; a value that breaks
its rule fails validation, which the client turns into a ``BadPlatformResponse``:

* **Customer ids** (``customerId`` of ``sessions/validate`` and of hasAccess) are 1 to 18 ASCII
  digits, the pattern the API schema gives (``^[0-9]{1,18}$``). They become the
  ``X-Paywall-Customer-Id`` header, the access cache's keys and a log field.
* The **customer session token** of the transfer-token exchange becomes the session cookie: it
  must be an RFC 6265 ``cookie-octet`` string of 1 to 4096 characters (visible ASCII without
  space, ``"``, ``,``, ``;`` and ``\\``): :func:`gateway.core.tokens.cookie_value`, the one
  rule the front-ends also read the cookie by.
* ``accessRightUniqueId`` values are only compared with the configured ids (an item naming
  another id is never used), stored in the cache's *values* and never echoed into a header, key
  or log, so they need no more than being non-empty strings. ``itemType``, ``itemId``,
  ``productId`` and the session's other fields are not passed on at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, time
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.tokens import cookie_value


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_STRICT = ConfigDict(strict=True)
_TIME: TypeAdapter[time] = TypeAdapter(time, config=_STRICT)
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime, config=_STRICT)


def _time_of_day(value: Any) -> Any:
    # Parsed here rather than by the field itself: after a "before" validator pydantic validates
    # in Python mode, where a strict ``time`` would refuse the string.
    if not isinstance(value, str):
        return value  # None passes, anything else fails the strict ``time`` check
    try:
        if "T" in value:  # a full date-time: keep its wall-clock time part
            return _DATETIME.validate_strings(value).time()
        return _TIME.validate_strings(value).replace(tzinfo=None)
    except ValidationError:
        # Re-raised without pydantic's text, which would quote the input.
        raise ValueError("expected a time of day HH:MM[:SS[.f]] or an RFC 3339 date-time") from None


def _none_as_false(value: Any) -> Any:
    return False if value is None else value


Instant = Annotated[datetime, AfterValidator(_assume_utc)]
"""An RFC 3339 date-time; naive values are taken as UTC."""

TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
"""A naive wall-clock time, read in the gateway's configured zone."""

Flag = Annotated[bool, BeforeValidator(_none_as_false)]
"""A boolean where ``null`` means the same as missing: ``False``."""

is_customer_id = re.compile(r"[0-9]{1,18}").fullmatch
"""Whether a string is a plenigo customer id: 1 to 18 ASCII digits (the API schema's pattern)."""


def _customer_id(value: str) -> str:
    if not is_customer_id(value):
        # Never quote the value: it may be anything, and it goes into a log line.
        raise ValueError("expected a customer id of 1 to 18 ASCII digits")
    return value


def _cookie_value(value: str) -> str:
    if not cookie_value(value):
        raise ValueError(
            "expected a cookie value: 1 to 4096 visible ASCII characters without "
            "space, double quote, comma, semicolon or backslash"
        )
    return value


CustomerId = Annotated[str, AfterValidator(_customer_id)]
"""A customer id the gateway may put into a header, a cache key and a log line."""

CookieValue = Annotated[str, AfterValidator(_cookie_value)]
"""A token the gateway may set as a cookie value as it is."""


class _PlatformModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class AccessRightItemDataGranted(_PlatformModel):
    """One item of a hasAccess answer (schema ``AccessRightItemDataGranted``)."""

    access_right_unique_id: str = Field(alias="accessRightUniqueId", min_length=1)
    access_granted: Flag = Field(default=False, alias="accessGranted")
    blocked: Flag = False
    life_time_start: Instant | None = Field(default=None, alias="lifeTimeStart")
    life_time_end: Instant | None = Field(default=None, alias="lifeTimeEnd")
    access_time_start: TimeOfDay | None = Field(default=None, alias="accessTimeStart")
    access_time_end: TimeOfDay | None = Field(default=None, alias="accessTimeEnd")
    paused_time_start: Instant | None = Field(default=None, alias="pausedTimeStart")
    paused_time_end: Instant | None = Field(default=None, alias="pausedTimeEnd")
    max_cache_date: Instant | None = Field(default=None, alias="maxCacheDate")
    item_type: str | None = Field(default=None, alias="itemType")
    item_id: str | None = Field(default=None, alias="itemId")
    product_id: str | None = Field(default=None, alias="productId")


class AccessRightDataGranted(_PlatformModel):
    """The hasAccess answer (schema ``AccessRightDataGranted``)."""

    customer_id: CustomerId | None = Field(default=None, alias="customerId")
    customer_blocked: Flag = Field(default=False, alias="customerBlocked")
    access_granted: Flag = Field(default=False, alias="accessGranted")
    # ``None`` when the API sends ``null``; read it as no items. (Not normalised by a validator:
    # that would switch the nested items to Python-mode validation, where strict datetimes fail.)
    items: tuple[AccessRightItemDataGranted, ...] | None = ()


class CustomerSession(_PlatformModel):
    """Answer of ``GET /sessions/validate``. Only ``customerId`` is required: it is the point."""

    customer_id: CustomerId = Field(alias="customerId")
    id: str | None = None
    contract_company_id: str | None = Field(default=None, alias="contractCompanyId")
    company_id: str | None = Field(default=None, alias="companyId")
    created: Instant | None = None
    type: str | None = None


class CustomerSessionToken(_PlatformModel):
    """``{customerSession}``: answer of the transfer-token exchange and of session creation."""

    customer_session: CookieValue = Field(alias="customerSession")


class TransferToken(_PlatformModel):
    """``{transferToken}``: answer of ``POST /sessions/transferToken``."""

    transfer_token: str = Field(alias="transferToken", min_length=1)


class FieldError(_PlatformModel):
    """One entry of ``validationErrors`` (schema ``ValidationError``; renamed, pydantic has one)."""

    field: str
    error: str
    value: str | None = None


class ErrorResultBase(_PlatformModel):
    """The platform's error body: ``{errorCode, errorMessage}``."""

    error_code: int = Field(alias="errorCode")
    error_message: str = Field(alias="errorMessage")


class ErrorResult(ErrorResultBase):
    """An error body that may list the offending fields (400, 412)."""

    validation_errors: tuple[FieldError, ...] | None = Field(default=None, alias="validationErrors")


# TypeAdapters built once: validating JSON bytes directly skips the intermediate dict.
ACCESS_RIGHT_DATA_GRANTED: TypeAdapter[AccessRightDataGranted] = TypeAdapter(AccessRightDataGranted)
CUSTOMER_SESSION: TypeAdapter[CustomerSession] = TypeAdapter(CustomerSession)
CUSTOMER_SESSION_TOKEN: TypeAdapter[CustomerSessionToken] = TypeAdapter(CustomerSessionToken)
TRANSFER_TOKEN: TypeAdapter[TransferToken] = TypeAdapter(TransferToken)
ERROR_RESULT: TypeAdapter[ErrorResult] = TypeAdapter(ErrorResult)


def to_access_item(item: AccessRightItemDataGranted) -> AccessItem:
    """The core's view of one item."""
    return AccessItem(
        access_right_id=item.access_right_unique_id,
        granted=item.access_granted,
        blocked=item.blocked,
        lifetime_start=item.life_time_start,
        lifetime_end=item.life_time_end,
        window_start=item.access_time_start,
        window_end=item.access_time_end,
        pause_start=item.paused_time_start,
        pause_end=item.paused_time_end,
        max_cache_date=item.max_cache_date,
    )


def to_access_payload(
    model: AccessRightDataGranted,
    fetched_at: datetime,
    *,
    customer_id: str | None = None,
) -> AccessPayload:
    """Convert a hasAccess answer into the core's :class:`AccessPayload`.

    ``fetched_at`` must be timezone-aware: it is when the question was sent. ``customer_id``
    (the id that was asked about) wins over the body's ``customerId``, which the API may omit;
    one of the two is required. The client checks beforehand that they agree.
    """
    if fetched_at.tzinfo is None or fetched_at.utcoffset() is None:
        raise ValueError("fetched_at must be timezone-aware")
    who = customer_id if customer_id is not None else model.customer_id
    if who is None:
        raise ValueError("the answer names no customer and none was given")
    return AccessPayload(
        customer_id=who,
        customer_blocked=model.customer_blocked,
        granted=model.access_granted,
        items=_items(model.items or ()),
        fetched_at=fetched_at,
    )


def _items(items: Iterable[AccessRightItemDataGranted]) -> tuple[AccessItem, ...]:
    return tuple(to_access_item(item) for item in items)
