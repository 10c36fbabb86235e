"""The simulator's JSON shapes: model objects to API payloads, request bodies to model changes.

Shapes follow the OpenAPI subset (``AccessRightData``, ``AccessRightDataGranted``,
``CustomerSession``, ``AccessRightItemBase`` / ``AccessRightItemCreation``). Instants are
RFC 3339 in UTC with a ``Z`` and microseconds, as in the API's examples; daily window times are
``HH:MM:SS``. Nullable fields are sent as ``null`` when unset; non-nullable optional ones
(``productId``, ``activePartners``) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from gateway.sandbox.access import any_granted, item_granted
from gateway.sandbox.api_errors import FieldError, bad_request
from gateway.sandbox.data import parse_daily_time
from gateway.sandbox.model import (
    ACCESS_RIGHT_ID_PATTERN,
    AccessRightItem,
    Customer,
    SandboxData,
    Session,
)

_INSTANT_FIELDS = {
    "lifeTimeStart": "life_time_start",
    "lifeTimeEnd": "life_time_end",
    "pausedTimeStart": "paused_time_start",
    "pausedTimeEnd": "paused_time_end",
    "maxCacheDate": "max_cache_date",
}
_TIME_FIELDS = {"accessTimeStart": "access_time_start", "accessTimeEnd": "access_time_end"}


def format_instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_daily_time(value: time | None) -> str | None:
    return None if value is None else value.strftime("%H:%M:%S")


def _audit(
    created: datetime, changed: datetime, created_by: tuple[str, str], changed_by: tuple[str, str]
) -> dict[str, Any]:
    return {
        "createdDate": format_instant(created),
        "createdBy": created_by[0],
        "createdByType": created_by[1],
        "changedDate": format_instant(changed),
        "changedBy": changed_by[0],
        "changedByType": changed_by[1],
    }


def item_json(item: AccessRightItem, now: datetime) -> dict[str, Any]:
    """One ``AccessRightItemData``."""
    body = _audit(
        item.created_date,
        item.changed_date,
        (item.created_by, item.created_by_type),
        (item.changed_by, item.changed_by_type),
    )
    body.update(
        {
            "lifeTimeStart": format_instant(item.life_time_start),
            "lifeTimeEnd": format_instant(item.life_time_end),
            "accessTimeStart": format_daily_time(item.access_time_start),
            "accessTimeEnd": format_daily_time(item.access_time_end),
            "pausedTimeStart": format_instant(item.paused_time_start),
            "pausedTimeEnd": format_instant(item.paused_time_end),
            "maxCacheDate": format_instant(item.effective_max_cache_date(now)),
            "data": dict(item.data),
            "blocked": item.blocked,
        }
    )
    if item.active_partners is not None:
        body["activePartners"] = list(item.active_partners)
    if item.product_id is not None:
        body["productId"] = item.product_id
    body["accessRightUniqueId"] = item.access_right_unique_id
    body["accessRightData"] = dict(item.access_right_data)
    body["itemType"] = item.item_type
    body["itemId"] = item.item_id
    return body


def access_right_data_json(customer: Customer, now: datetime) -> dict[str, Any]:
    """``AccessRightData``: the customer and all of its items."""
    body: dict[str, Any] = {"customerId": customer.customer_id}
    body["customerBlocked"] = customer.blocked
    body.update(
        _audit(
            customer.created_date,
            customer.changed_date,
            ("PLENIGO", "SYSTEM"),
            ("PLENIGO", "SYSTEM"),
        )
    )
    body["items"] = [item_json(item, now) for item in customer.items]
    return body


def access_granted_json(
    customer: Customer, access_right_ids: Iterable[str], now: datetime, zone: ZoneInfo
) -> dict[str, Any]:
    """``AccessRightDataGranted`` for the requested ids only (unknown ids add no item)."""
    wanted = set(access_right_ids)
    items: list[dict[str, Any]] = []
    grants: list[bool] = []
    for item in customer.items:
        if item.access_right_unique_id not in wanted:
            continue
        granted = item_granted(item, customer_blocked=customer.blocked, now=now, zone=zone)
        grants.append(granted)
        items.append({"accessGranted": granted, **item_json(item, now)})
    return {
        "customerId": customer.customer_id,
        "customerBlocked": customer.blocked,
        "accessGranted": any_granted(grants, customer_blocked=customer.blocked),
        "items": items,
    }


def session_json(session: Session, data: SandboxData) -> dict[str, Any]:
    """``CustomerSession`` as /sessions/validate reports it."""
    return {
        "id": session.session_id,
        "customerId": session.customer_id,
        "contractCompanyId": data.contract_company_id,
        "companyId": data.company_id,
        "created": format_instant(session.created),
        "type": "CUSTOMER_SESSION",
    }


# --- request bodies -------------------------------------------------------------------------


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:200]


def parse_api_instant(text: str) -> datetime:
    """An RFC 3339 date-time with an offset; ValueError otherwise."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None or "T" not in text.upper():
        raise ValueError(text)
    return parsed.astimezone(UTC)


def _nullable(
    body: dict[str, Any],
    key: str,
    convert: Callable[[str], Any],
    error: str,
    errors: list[FieldError],
) -> Any:
    value = body[key]
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(key, error, _show(value)))
        return None
    try:
        return convert(value)
    except ValueError:
        errors.append(FieldError(key, error, _show(value)))
        return None


def _string_map(
    body: dict[str, Any],
    key: str,
    max_props: int,
    max_key: int,
    max_value: int,
    errors: list[FieldError],
) -> dict[str, str]:
    value = body[key]
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > max_props
        or not all(isinstance(v, str) and len(v) <= max_value for v in value.values())
        or not all(len(k) <= max_key for k in value)
    ):
        errors.append(FieldError(key, "invalid", _show(value)))
        return {}
    return dict(value)


def parse_item_changes(body: object, *, creation: bool) -> dict[str, Any]:
    """Validate an ``AccessRightItemBase`` (or ``...Creation``) body.

    Returns the :class:`AccessRightItem` attributes to set, only for the keys the body has
    (``null`` clears a field). Read-only audit fields and unknown keys are ignored, as the
    schema allows them. Raises a 400 :class:`ApiError` listing every invalid field.
    """
    if not isinstance(body, dict):
        raise bad_request(FieldError("body", "object expected", _show(body)))
    errors: list[FieldError] = []
    changes: dict[str, Any] = {}
    if creation:
        right_id = body.get("accessRightUniqueId")
        if not isinstance(right_id, str) or not ACCESS_RIGHT_ID_PATTERN.match(right_id):
            errors.append(
                FieldError(
                    "accessRightUniqueId",
                    "required" if right_id is None else "pattern ^[0-9\\-a-zA-Z]{2,30}$",
                    "" if right_id is None else _show(right_id),
                )
            )
        else:
            changes["access_right_unique_id"] = right_id
    for key, attr in _INSTANT_FIELDS.items():
        if key in body:
            changes[attr] = _nullable(body, key, parse_api_instant, "date-time", errors)
    for key, attr in _TIME_FIELDS.items():
        if key in body:
            changes[attr] = _nullable(body, key, parse_daily_time, "time", errors)
    if "maxCacheDate" in body:
        changes["max_cache_for"] = None  # an explicit date replaces a rolling hint
    if "data" in body:
        changes["data"] = _string_map(body, "data", 20, 20, 2000, errors)
    if "blocked" in body:
        if isinstance(body["blocked"], bool):
            changes["blocked"] = body["blocked"]
        else:
            errors.append(FieldError("blocked", "boolean", _show(body["blocked"])))
    if "activePartners" in body:
        partners = body["activePartners"]
        if partners is None or (
            isinstance(partners, list) and all(isinstance(p, str) for p in partners)
        ):
            changes["active_partners"] = partners
        else:
            errors.append(FieldError("activePartners", "list of strings", _show(partners)))
    if errors:
        raise bad_request(*errors)
    return changes
