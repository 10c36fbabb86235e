"""Seed data for the simulator: a JSON file of customers, their sessions and access rights.

Format (``gateway/resources/sandbox-data.json`` is the worked example)::

    {
      "_comment": "free text (string or list of strings), ignored",
      "companyId": "...", "contractCompanyId": "...",        (optional, ≤ 40 characters)
      "customers": [
        {
          "customerId": "100001",                 numeric string, 1-18 digits (the API's pattern)
          "description": "free text, ignored",
          "blocked": false,                       customerBlocked
          "sessions": [                           fixed session tokens, so nobody needs to log in
            {"token": "demo-session-plain", "id": "...", "expires": "+1d"}   id, expires optional
          ],
          "accessRights": [
            {
              "accessRightUniqueId": "premium",   2-30 of [0-9a-zA-Z-]
              "itemId": "7001",                   optional, generated when missing
              "itemType": "SUBSCRIPTION",         optional, one of the API's item types
              "productId": "P_...",               optional
              "description": "free text, ignored",
              "blocked": false,
              "lifeTimeStart": "-30d",  "lifeTimeEnd": null,            instants
              "accessTimeStart": "06:00", "accessTimeEnd": "18:00",     daily window, HH:MM[:SS]
              "pausedTimeStart": "-1d", "pausedTimeEnd": "+7d",         instants
              "maxCacheDate": "+2m",                                    instant
              "maxCacheFor": "2m",     rolling: every answer reports maxCacheDate = now + 2m
              "data": {"key": "value"}, "accessRightData": {"key": "value"}
            }
          ]
        }
      ]
    }

Instants are either absolute RFC 3339 strings with an offset (``2025-01-01T00:00:00Z``), ``now``,
or relative expressions resolved against the ``now`` passed to :func:`load_data`: a sign and
one or more ``<number><unit>`` terms, units ``s m h d w`` (``+2m``, ``-1d``, ``+30d``,
``+1d12h``). ``null`` (or a missing key) means open on that side / unset.
Unknown keys are errors, so a typo cannot silently change what a scenario tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.sandbox.model import (
    ACCESS_RIGHT_ID_PATTERN,
    CUSTOMER_ID_PATTERN,
    ITEM_ID_MAX_LENGTH,
    ITEM_TYPES,
    PRODUCT_ID_MAX_LENGTH,
    AccessRightItem,
    Customer,
    SandboxData,
    Session,
)

__all__ = [
    "SandboxData",
    "load_data",
    "parse_daily_time",
    "parse_duration",
    "parse_instant",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_TERM = re.compile(r"(\d+)([smhdw])")
_RELATIVE = re.compile(r"^([+-])((?:\d+[smhdw])+)$")
_DURATION = re.compile(r"^((?:\d+[smhdw])+)$")
_DAILY_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")

_TOP_KEYS = frozenset({"_comment", "companyId", "contractCompanyId", "customers"})
_CUSTOMER_KEYS = frozenset({"customerId", "description", "blocked", "sessions", "accessRights"})
_SESSION_KEYS = frozenset({"token", "id", "expires", "created", "description"})
_ITEM_KEYS = frozenset(
    {
        "accessRightUniqueId",
        "itemId",
        "itemType",
        "productId",
        "description",
        "blocked",
        "lifeTimeStart",
        "lifeTimeEnd",
        "accessTimeStart",
        "accessTimeEnd",
        "pausedTimeStart",
        "pausedTimeEnd",
        "maxCacheDate",
        "maxCacheFor",
        "data",
        "accessRightData",
    }
)

T = TypeVar("T")


def _terms_seconds(terms: str) -> int:
    return sum(int(n) * _UNITS[unit] for n, unit in _TERM.findall(terms))


def parse_duration(text: str) -> timedelta:
    """``"2m"``, ``"1h30m"`` -> a timedelta; ValueError for anything else."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (expected e.g. '2m', '1h30m', '7d')")
    return timedelta(seconds=_terms_seconds(match.group(1)))


def parse_instant(text: str, now: datetime) -> datetime:
    """An absolute RFC 3339 instant, ``now``, or ``+2m`` / ``-1d`` relative to ``now`` (UTC)."""
    value = text.strip()
    if value == "now":
        return now.astimezone(UTC)
    match = _RELATIVE.match(value)
    if match is not None:
        delta = timedelta(seconds=_terms_seconds(match.group(2)))
        return (now + delta if match.group(1) == "+" else now - delta).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an instant (expected RFC 3339 such as '2025-01-01T00:00:00Z', "
            "'now', or a relative expression such as '+2m', '-1d', '+30d')"
        ) from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise ValueError(f"{text!r} needs a date, a time and a UTC offset or 'Z'")
    return parsed.astimezone(UTC)


def parse_daily_time(text: str) -> time:
    """``"06:00"`` or ``"06:00:00"`` -> a wall-clock time of day."""
    match = _DAILY_TIME.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day (expected HH:MM or HH:MM:SS)")
    return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


class _Reader:
    """Typed access to one JSON object, with errors that name where in the file they are."""

    def __init__(self, obj: object, where: str, allowed: frozenset[str]) -> None:
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        self.obj: dict[str, Any] = obj
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def _typed(self, key: str, kind: type[T], label: str, *, required: bool) -> T | None:
        value = self.obj.get(key)
        if value is None:
            if required:
                raise ValueError(f"{self.at(key)}: required")
            return None
        if not isinstance(value, kind):
            raise ValueError(f"{self.at(key)}: expected {label}, got {json.dumps(value)}")
        return value

    def string(self, key: str) -> str | None:
        return self._typed(key, str, "a string", required=False)

    def required_string(self, key: str) -> str:
        value = self._typed(key, str, "a string", required=True)
        if not value:
            raise ValueError(f"{self.at(key)}: must not be empty")
        return value

    def boolean(self, key: str) -> bool:
        return bool(self._typed(key, bool, "true or false", required=False))

    def array(self, key: str) -> list[Any]:
        return self._typed(key, list, "a list", required=False) or []

    def converted(self, key: str, convert: Callable[[str], T]) -> T | None:
        text = self.string(key)
        if text is None:
            return None
        try:
            return convert(text)
        except ValueError as exc:
            raise ValueError(f"{self.at(key)}: {exc}") from None

    def string_map(self, key: str, max_items: int, max_key: int, max_value: int) -> dict[str, str]:
        """A string-to-string object within the limits the API's schema sets for it."""
        value = self._typed(key, dict, "an object of strings", required=False) or {}
        if (
            len(value) > max_items
            or any(len(k) > max_key for k in value)
            or not all(isinstance(v, str) and len(v) <= max_value for v in value.values())
        ):
            raise ValueError(
                f"{self.at(key)}: at most {max_items} entries, keys of at most {max_key} and "
                f"string values of at most {max_value} characters"
            )
        return dict(value)


def _load_item(obj: object, where: str, now: datetime, data: SandboxData) -> AccessRightItem:
    r = _Reader(obj, where, _ITEM_KEYS)
    right_id = r.required_string("accessRightUniqueId")
    if not ACCESS_RIGHT_ID_PATTERN.match(right_id):
        raise ValueError(
            f"{r.at('accessRightUniqueId')}: {right_id!r} must be 2-30 characters of 0-9 a-z A-Z -"
        )
    item_type = r.string("itemType") or "SUBSCRIPTION"
    if item_type not in ITEM_TYPES:
        raise ValueError(
            f"{r.at('itemType')}: {item_type!r} is not one of {', '.join(sorted(ITEM_TYPES))}"
        )
    item_id = r.string("itemId") or data.next_item_id()
    if not 0 < len(item_id) <= ITEM_ID_MAX_LENGTH:
        raise ValueError(f"{r.at('itemId')}: must be 1-{ITEM_ID_MAX_LENGTH} characters")
    product_id = r.string("productId")
    if product_id is not None and len(product_id) > PRODUCT_ID_MAX_LENGTH:
        raise ValueError(f"{r.at('productId')}: longer than {PRODUCT_ID_MAX_LENGTH} characters")

    def instant(key: str) -> datetime | None:
        return r.converted(key, lambda text: parse_instant(text, now))

    item = AccessRightItem(
        access_right_unique_id=right_id,
        item_id=item_id,
        item_type=item_type,
        product_id=product_id,
        blocked=r.boolean("blocked"),
        life_time_start=instant("lifeTimeStart"),
        life_time_end=instant("lifeTimeEnd"),
        access_time_start=r.converted("accessTimeStart", parse_daily_time),
        access_time_end=r.converted("accessTimeEnd", parse_daily_time),
        paused_time_start=instant("pausedTimeStart"),
        paused_time_end=instant("pausedTimeEnd"),
        max_cache_date=instant("maxCacheDate"),
        max_cache_for=r.converted("maxCacheFor", parse_duration),
        data=r.string_map("data", 20, 20, 2000),
        access_right_data=r.string_map("accessRightData", 50, 30, 200),
        created_date=now,
        changed_date=now,
    )
    for start, end, name in (
        (item.life_time_start, item.life_time_end, "lifeTime"),
        (item.paused_time_start, item.paused_time_end, "pausedTime"),
    ):
        if start is not None and end is not None and end < start:
            raise ValueError(f"{where}: {name}End is before {name}Start")
    return item


def _load_session(obj: object, where: str, now: datetime, customer_id: str) -> Session:
    r = _Reader(obj, where, _SESSION_KEYS)
    token = r.required_string("token")
    if not 0 < len(token) <= 10_000 or token.strip() != token:
        raise ValueError(f"{r.at('token')}: must be 1-10000 characters without outer spaces")
    session_id = r.string("id") or hashlib.sha256(token.encode()).hexdigest()[:27]
    if len(session_id) > 40:
        raise ValueError(f"{r.at('id')}: longer than 40 characters")
    created = r.converted("created", lambda text: parse_instant(text, now)) or now
    expires = r.converted("expires", lambda text: parse_instant(text, now))
    return Session(token, session_id, customer_id, created, expires)


def _load_customer(obj: object, where: str, now: datetime, data: SandboxData) -> None:
    r = _Reader(obj, where, _CUSTOMER_KEYS)
    customer_id = r.required_string("customerId")
    if not CUSTOMER_ID_PATTERN.match(customer_id):
        raise ValueError(f"{r.at('customerId')}: {customer_id!r} must be 1-18 digits")
    if customer_id in data.customers:
        raise ValueError(f"{r.at('customerId')}: customer {customer_id} appears twice")
    customer = Customer(
        customer_id, blocked=r.boolean("blocked"), created_date=now, changed_date=now
    )
    data.customers[customer_id] = customer
    for n, item in enumerate(r.array("accessRights")):
        loaded = _load_item(item, f"{r.at('accessRights')}[{n}]", now, data)
        if any(i.item_id == loaded.item_id for i in customer.items):
            raise ValueError(f"{r.at('accessRights')}[{n}].itemId: {loaded.item_id!r} repeated")
        customer.items.append(loaded)
    for n, session in enumerate(r.array("sessions")):
        loaded_session = _load_session(session, f"{r.at('sessions')}[{n}]", now, customer_id)
        if loaded_session.token in data.sessions:
            raise ValueError(f"{r.at('sessions')}[{n}].token: used twice")
        data.sessions[loaded_session.token] = loaded_session


def parse_data(document: object, now: datetime) -> SandboxData:
    """Build the simulator's world from an already-parsed JSON document."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    r = _Reader(document, "sandbox data", _TOP_KEYS)
    data = SandboxData()
    for key, attr in (("companyId", "company_id"), ("contractCompanyId", "contract_company_id")):
        value = r.string(key)
        if value is not None:
            if not 0 < len(value) <= 40:
                raise ValueError(f"{r.at(key)}: must be 1-40 characters")
            setattr(data, attr, value)
    for n, customer in enumerate(r.array("customers")):
        _load_customer(customer, f"customers[{n}]", now, data)
    return data


def load_data(path: Path, now: datetime) -> SandboxData:
    """Read a seed file; relative times resolve against ``now``.

    Every problem (unreadable file, invalid JSON, a bad value) is a ValueError whose message
    names the file and where in it the problem is.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read sandbox data file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return parse_data(document, now)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
