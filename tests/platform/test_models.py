"""The payload models against the OpenAPI subset's examples, and the parsing decisions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.core.payload import AccessItem, AccessPayload
from gateway.platform.models import (
    ACCESS_RIGHT_DATA_GRANTED,
    AccessRightDataGranted,
    AccessRightItemDataGranted,
    CustomerSession,
    CustomerSessionToken,
    ErrorResult,
    ErrorResultBase,
    TransferToken,
    to_access_payload,
)
from tests.conftest import OPENAPI_SPEC

# OpenAPI schema name -> the model that parses it.
MODELS: dict[str, type[BaseModel]] = {
    "AccessRightDataGranted": AccessRightDataGranted,
    "AccessRightItemDataGranted": AccessRightItemDataGranted,
    "CustomerSession": CustomerSession,
    "CustomerSessionToken": CustomerSessionToken,
    "schemas-TransferToken": TransferToken,
    "ErrorResult": ErrorResult,
    "ErrorResultBase": ErrorResultBase,
}


@pytest.fixture(scope="module")
def spec(openapi_spec: dict[str, Any]) -> dict[str, Any]:
    return openapi_spec


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _media_objects(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            bodies = [*operation["responses"].values(), operation.get("requestBody", {})]
            for body in bodies:
                yield from body.get("content", {}).values()


def _examples_by_schema(spec: dict[str, Any]) -> dict[str, set[str]]:
    """Which components.examples each schema is illustrated with, collected from the paths."""
    found: dict[str, set[str]] = {}
    for media in _media_objects(spec):
        ref = media.get("schema", {}).get("$ref")
        if ref is None:
            continue
        for example in media.get("examples", {}).values():
            found.setdefault(_ref_name(ref), set()).add(_ref_name(example["$ref"]))
    return found


def _example_cases() -> list[Any]:
    # Collected at import so every example is its own test; a missing spec fails below instead.
    if not OPENAPI_SPEC.is_file():
        return [pytest.param(None, None, id="spec-missing")]
    spec = json.loads(OPENAPI_SPEC.read_text(encoding="utf-8"))
    cases = []
    for schema, examples in sorted(_examples_by_schema(spec).items()):
        if schema in MODELS:
            for example in sorted(examples):
                cases.append(pytest.param(schema, example, id=f"{schema}-{example}"))
    return cases


@pytest.mark.parametrize(("schema", "example"), _example_cases())
def test_every_spec_example_parses(
    spec: dict[str, Any], schema: str | None, example: str | None
) -> None:
    assert schema is not None
    assert example is not None
    value = spec["components"]["examples"][example]["value"]
    model = MODELS[schema].model_validate_json(json.dumps(value))
    assert isinstance(model, MODELS[schema])


def test_the_examples_cover_every_response_model(spec: dict[str, Any]) -> None:
    covered = set(_examples_by_schema(spec))
    wanted = set(MODELS) - {"AccessRightItemDataGranted"}  # only ever nested
    assert wanted <= covered, f"no example found for {sorted(wanted - covered)}"


def _properties(spec: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """The property names of a schema, following $ref and allOf."""
    if "$ref" in schema:
        return _properties(spec, spec["components"]["schemas"][_ref_name(schema["$ref"])])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= _properties(spec, part)
    return names


@pytest.mark.parametrize("schema", sorted(MODELS))
def test_model_fields_exist_in_the_schema(spec: dict[str, Any], schema: str) -> None:
    model = MODELS[schema]
    properties = _properties(spec, spec["components"]["schemas"][schema])
    aliases = {field.alias or name for name, field in model.model_fields.items()}
    assert aliases <= properties, f"not in {schema}: {sorted(aliases - properties)}"


def test_granted_example_converts(spec: dict[str, Any]) -> None:
    value = spec["components"]["examples"]["accessRightDataGrantedExample"]["value"]
    model = ACCESS_RIGHT_DATA_GRANTED.validate_json(json.dumps(value).encode())
    fetched_at = datetime(2019, 6, 1, 12, 0, tzinfo=UTC)
    payload = to_access_payload(model, fetched_at)
    stamp = datetime(2019, 1, 1, 7, 53, 23, 450961, tzinfo=UTC)
    assert payload == AccessPayload(
        customer_id="100003",
        customer_blocked=False,
        granted=True,
        items=(
            AccessItem(
                access_right_id="UNIQUE-ID",
                granted=True,
                blocked=False,
                lifetime_start=stamp,
                lifetime_end=stamp.replace(year=2020),
                window_start=time(6, 0),
                window_end=time(18, 0),
                pause_start=None,
                pause_end=None,
                max_cache_date=stamp.replace(year=2020),
            ),
        ),
        fetched_at=fetched_at,
    )


# -- edge cases ---------------------------------------------------------------------------


def _item(**fields: Any) -> AccessRightItemDataGranted:
    body = {"accessRightUniqueId": "premium", **fields}
    return AccessRightItemDataGranted.model_validate_json(json.dumps(body))


def _answer(**fields: Any) -> AccessRightDataGranted:
    return AccessRightDataGranted.model_validate_json(json.dumps(fields))


def test_missing_flags_are_false() -> None:
    answer = _answer(items=[{"accessRightUniqueId": "premium"}])
    assert (answer.customer_blocked, answer.access_granted) == (False, False)
    item = answer.items[0] if answer.items else None
    assert item is not None
    assert (item.access_granted, item.blocked) == (False, False)


def test_null_flags_are_false() -> None:
    answer = _answer(customerBlocked=None, accessGranted=None, items=None)
    assert (answer.customer_blocked, answer.access_granted) == (False, False)
    item = _item(accessGranted=None, blocked=None)
    assert (item.access_granted, item.blocked) == (False, False)


def test_null_and_missing_items_are_no_items() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert to_access_payload(_answer(customerId="1", items=None), now).items == ()
    assert to_access_payload(_answer(customerId="1"), now).items == ()


@pytest.mark.parametrize(
    "field",
    [
        "lifeTimeStart",
        "lifeTimeEnd",
        "accessTimeStart",
        "accessTimeEnd",
        "pausedTimeStart",
        "pausedTimeEnd",
        "maxCacheDate",
        "itemType",
    ],
)
def test_nullable_item_fields_accept_null(field: str) -> None:
    answer = _answer(customerId="1", items=[{"accessRightUniqueId": "premium", field: None}])
    payload = to_access_payload(answer, datetime(2025, 1, 1, tzinfo=UTC))
    assert payload.items == (AccessItem(access_right_id="premium", granted=False),)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2025-03-30T01:30:00Z", datetime(2025, 3, 30, 1, 30, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2025-03-30T03:30:00+02:00",
            datetime(2025, 3, 30, 3, 30, tzinfo=timezone(timedelta(hours=2))),
            id="offset-kept",
        ),
        pytest.param(
            "2025-03-30T01:30:00", datetime(2025, 3, 30, 1, 30, tzinfo=UTC), id="naive-is-utc"
        ),
        pytest.param(
            "2025-03-30T01:30:00.123456789Z",
            datetime(2025, 3, 30, 1, 30, 0, 123456, tzinfo=UTC),
            id="nanoseconds-truncated",
        ),
    ],
)
def test_instants_are_aware(raw: str, expected: datetime) -> None:
    item = _item(lifeTimeStart=raw, pausedTimeEnd=raw, maxCacheDate=raw)
    for value in (item.life_time_start, item.paused_time_end, item.max_cache_date):
        assert value == expected
        assert value is not None
        assert value.utcoffset() == expected.utcoffset()


def test_naive_session_created_is_utc() -> None:
    session = CustomerSession.model_validate_json(
        b'{"customerId": "1", "created": "2025-01-01T10:00:00"}'
    )
    assert session.created == datetime(2025, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("06:00:00", time(6), id="hh-mm-ss"),
        pytest.param("06:00", time(6), id="hh-mm"),
        pytest.param("23:59:59.5", time(23, 59, 59, 500000), id="fraction"),
        pytest.param("18:00:00.123456789", time(18, 0, 0, 123456), id="nanoseconds"),
        pytest.param("06:00:00Z", time(6), id="offset-dropped"),
        pytest.param("06:00:00+02:00", time(6), id="offset-dropped-not-converted"),
        pytest.param("2019-01-01T06:30:00+02:00", time(6, 30), id="full-datetime-time-part"),
        pytest.param("2019-01-01T06:30:00", time(6, 30), id="naive-full-datetime"),
    ],
)
def test_daily_window_times(raw: str, expected: time) -> None:
    item = _item(accessTimeStart=raw, accessTimeEnd=raw)
    assert item.access_time_start == expected
    assert item.access_time_end == expected
    assert item.access_time_start is not None
    assert item.access_time_start.tzinfo is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"customerBlocked": "false"}, id="bool-as-string"),
        pytest.param({"accessGranted": 1}, id="bool-as-number"),
        pytest.param({"customerId": 100003}, id="customer-id-as-number"),
        pytest.param({"items": {}}, id="items-object"),
        pytest.param({"items": [{}]}, id="item-without-id"),
        pytest.param({"items": [{"accessRightUniqueId": 7}]}, id="item-id-as-number"),
        pytest.param({"items": [{"accessRightUniqueId": ""}]}, id="item-id-empty"),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "blocked": "no"}]}, id="item-blocked-string"
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "lifeTimeEnd": 1767225600}]},
            id="instant-as-number",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "lifeTimeEnd": "2025-01-01"}]},
            id="instant-date-only",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "maxCacheDate": "soon"}]},
            id="instant-garbage",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "accessTimeStart": 21600}]},
            id="time-as-number",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "accessTimeStart": "25:00:00"}]},
            id="time-out-of-range",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "accessTimeEnd": "six o'clock"}]},
            id="time-garbage",
        ),
        pytest.param(
            {"items": [{"accessRightUniqueId": "a", "accessTimeEnd": "xT06:00"}]},
            id="time-broken-datetime",
        ),
    ],
)
def test_wrong_types_are_errors(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AccessRightDataGranted.model_validate_json(json.dumps(body))


def test_unknown_fields_are_ignored() -> None:
    answer = _answer(
        customerId="1",
        brandNewField={"nested": [1, 2]},
        items=[{"accessRightUniqueId": "a", "futureFlag": True, "itemType": "NEW_KIND"}],
    )
    assert answer.items is not None
    assert answer.items[0].item_type == "NEW_KIND"


def test_not_an_object_is_an_error() -> None:
    for body in (b"[]", b"null", b"not json", b""):
        with pytest.raises(ValidationError):
            AccessRightDataGranted.model_validate_json(body)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(CustomerSession, b"{}", id="session-without-customer"),
        pytest.param(CustomerSession, b'{"customerId": ""}', id="session-empty-customer"),
        pytest.param(CustomerSession, b'{"customerId": 6342000}', id="session-numeric-customer"),
        pytest.param(CustomerSessionToken, b"{}", id="token-missing"),
        pytest.param(CustomerSessionToken, b'{"customerSession": null}', id="token-null"),
        pytest.param(TransferToken, b'{"transferToken": ""}', id="transfer-token-empty"),
        pytest.param(ErrorResultBase, b'{"errorCode": "99015"}', id="error-code-string"),
    ],
)
def test_session_models_reject(model: type[BaseModel], body: bytes) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(body)


def test_conversion_maps_every_field() -> None:
    answer = _answer(
        customerId="42",
        customerBlocked=True,
        accessGranted=False,
        items=[
            {
                "accessRightUniqueId": "premium",
                "accessGranted": True,
                "blocked": True,
                "lifeTimeStart": "2025-01-01T00:00:00Z",
                "lifeTimeEnd": "2026-01-01T00:00:00Z",
                "accessTimeStart": "22:00:00",
                "accessTimeEnd": "06:00:00",
                "pausedTimeStart": "2025-06-01T00:00:00Z",
                "pausedTimeEnd": "2025-07-01T00:00:00Z",
                "maxCacheDate": "2025-01-01T00:05:00Z",
            },
            {"accessRightUniqueId": "premium"},
        ],
    )
    fetched_at = datetime(2025, 1, 1, tzinfo=UTC)
    payload = to_access_payload(answer, fetched_at)
    assert (payload.customer_id, payload.customer_blocked, payload.granted) == ("42", True, False)
    assert payload.fetched_at == fetched_at
    first, second = payload.items
    assert first == AccessItem(
        access_right_id="premium",
        granted=True,
        blocked=True,
        lifetime_start=datetime(2025, 1, 1, tzinfo=UTC),
        lifetime_end=datetime(2026, 1, 1, tzinfo=UTC),
        window_start=time(22),
        window_end=time(6),
        pause_start=datetime(2025, 6, 1, tzinfo=UTC),
        pause_end=datetime(2025, 7, 1, tzinfo=UTC),
        max_cache_date=datetime(2025, 1, 1, 0, 5, tzinfo=UTC),
    )
    assert second == AccessItem(access_right_id="premium", granted=False)


def test_conversion_prefers_the_asked_customer_id() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert to_access_payload(_answer(), now, customer_id="7").customer_id == "7"
    with pytest.raises(ValueError, match="no customer"):
        to_access_payload(_answer(), now)


def test_conversion_needs_an_aware_fetch_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_access_payload(_answer(customerId="1"), datetime(2025, 1, 1))


def test_models_are_frozen() -> None:
    item = _item()
    with pytest.raises(ValidationError):
        item.blocked = True  # type: ignore[misc]
