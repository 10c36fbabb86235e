"""Callback bodies -> affected customers (gateway.http.callbacks.parse_callback), no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.http.callbacks import (
    CALLBACK_TYPES,
    LOGGED_PATH,
    NO_ACCESS_CHANGE,
    InvalidCallback,
    logged_path,
    parse_callback,
)
from tests.callbacks.conftest import SEED


def body(entity_type: str, callback_type: str, entity: Any, entity_id: Any = "1") -> bytes:
    return json.dumps(
        {
            "entityType": entity_type,
            "callbackType": callback_type,
            "entityId": entity_id,
            "entity": entity,
        }
    ).encode()


@pytest.mark.parametrize("example", SEED["valid"], ids=lambda e: e["name"])
def test_every_valid_seed_example_maps_to_its_customers(example: dict[str, Any]) -> None:
    parsed = parse_callback(json.dumps(example["body"]).encode())
    assert parsed.entity_type == example["entityType"]
    assert parsed.callback_type == example["callbackType"]
    assert list(parsed.customers) == example["customers"]
    assert parsed.sessions is example["sessions"]


def test_the_seed_subscription_change_ignores_created_by() -> None:
    # createdBy "8" is also the customer there: make it another id, it must not appear.
    example = next(e for e in SEED["valid"] if e["name"] == "Change subscription")
    entity = dict(example["body"]["entity"], createdBy="999", changedBy="998")
    entity["invoiceCustomerId"] = "7"
    parsed = parse_callback(body("SUBSCRIPTION", "CHANGE", entity, "1230116"))
    assert set(parsed.customers) == {"7", "8"}


@pytest.mark.parametrize("example", SEED["invalid"], ids=lambda e: e["name"])
def test_the_seed_invalid_examples_are_refused(example: dict[str, Any]) -> None:
    with pytest.raises(InvalidCallback, match="not valid JSON"):
        parse_callback(example["raw"].encode())


# entity type -> (callback type, entity, the customers it affects)
TABLE: dict[str, tuple[str, Any, set[str]]] = {
    "CUSTOMER": ("CHANGE", {"customerId": "5", "changedBy": "10001"}, {"5"}),
    "SUBSCRIPTION": (
        "CANCELLATION",
        {"invoiceCustomerId": "11", "deliveryCustomerId": 12, "createdBy": "13"},
        {"11", "12"},
    ),
    "MULTIUSER_SUBSCRIPTION": (
        "CREATION",
        {"members": [{"customerId": "21"}, {"customer": {"customerId": 22}}]},
        {"21", "22"},
    ),
    "ORDER": (
        "CREATION",
        {"invoiceCustomerId": 31, "items": [{"deliveryCustomerId": "32"}]},
        {"31", "32"},
    ),
    "PURCHASED_ADDON": ("CONDITIONS_FULFILLED", {"deliveryCustomerId": "41"}, {"41"}),
    "FAILED_PAYMENT": ("PAYMENT_FAILED", {"x": {"y": [{"invoiceCustomerId": "51"}]}}, {"51"}),
    "APP_STORE_ORDER": ("CREATION", {"customerId": "61", "changedBy": "62"}, {"61"}),
    "APP_STORE_SUBSCRIPTION": ("CHANGE", {"customerId": 71}, {"71"}),
}


def test_the_table_covers_every_access_entity_type() -> None:
    assert set(TABLE) == set(CALLBACK_TYPES) - NO_ACCESS_CHANGE


@pytest.mark.parametrize("entity_type", sorted(TABLE))
def test_every_entity_type_maps_to_the_customers_it_affects(entity_type: str) -> None:
    callback_type, entity, customers = TABLE[entity_type]
    entity_id = "5" if entity_type == "CUSTOMER" else "900"
    parsed = parse_callback(body(entity_type, callback_type, entity, entity_id))
    assert set(parsed.customers) == customers
    assert parsed.documented
    assert parsed.sessions is (entity_type == "CUSTOMER")


@pytest.mark.parametrize("entity_type", sorted(NO_ACCESS_CHANGE))
def test_invoices_and_opt_ins_name_nobody(entity_type: str) -> None:
    kind = next(iter(CALLBACK_TYPES[entity_type]))
    parsed = parse_callback(body(entity_type, kind, {"invoiceCustomerId": "not read"}))
    assert parsed.customers == ()
    assert parsed.documented


def test_customer_creation_does_not_end_sessions() -> None:
    assert parse_callback(body("CUSTOMER", "CREATION", None, "7")).sessions is False
    assert parse_callback(body("CUSTOMER", "DELETION", None, 7)).customers == ("7",)


def test_undocumented_types_parse_but_are_not_documented() -> None:
    parsed = parse_callback(body("NEWS_LETTER", "CREATION", {"customerId": "1"}))
    assert not parsed.documented
    assert parsed.labels == ("other", "CREATION")
    parsed = parse_callback(body("SUBSCRIPTION", "EXPLODED", {"customerId": "1"}))
    assert not parsed.documented
    assert parsed.labels == ("SUBSCRIPTION", "other")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not valid JSON"),
        (b'{"entityType": "CUSTOMER"', "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "JSON object"),
        (b'{"entityType": NaN}', "not JSON"),
        (b'{"entityType":"CUSTOMER","entityType":"ORDER"}', "duplicate key"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"entityType":"customer","callbackType":"CHANGE","entityId":"1"}', "entityType"),
        (b'{"entityType":"CUSTOMER","callbackType":7,"entityId":"1"}', "callbackType"),
        (b'{"entityType":"CUSTOMER","callbackType":"CHANGE"}', "entityId is missing"),
        (b'{"entityType":"CUSTOMER","callbackType":"CHANGE","entityId":true}', "entityId"),
        (b'{"entityType":"CUSTOMER","callbackType":"CHANGE","entityId":"x"}', "customer id"),
        (
            b'{"entityType":"CUSTOMER","callbackType":"CHANGE","entityId":"1","entity":[]}',
            "entity must be",
        ),
        (body("ORDER", "CREATION", {"invoiceCustomerId": "12a"}), "invoiceCustomerId"),
        (body("ORDER", "CREATION", {"customerId": 1.5}), "customerId"),
        (body("ORDER", "CREATION", {"customerId": -3}), "customerId"),
        (body("ORDER", "CREATION", {"customerId": "1" * 19}), "customerId"),
        (body("ORDER", "CREATION", [{"customerId": str(i)} for i in range(1_001)]), "entity"),
        (
            body("ORDER", "CREATION", {"items": [{"customerId": str(i)} for i in range(1_001)]}),
            "at most",
        ),
    ],
)
def test_malformed_bodies_have_a_short_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidCallback, match=reason) as caught:
        parse_callback(raw)
    assert len(str(caught.value)) < 80


def test_empty_customer_fields_are_absent() -> None:
    parsed = parse_callback(body("ORDER", "CREATION", {"customerId": None, "x": ""}))
    assert parsed.customers == ()


@pytest.mark.parametrize(
    "path",
    [
        "/_paywall/callbacks/s3cret-s3cret-s3cret",
        "/_paywall/callbacks",
        "//_paywall//callbacks/x",
        "/_paywall/callback%73/x",
        "/%5Fpaywall/CALLBACKS/x",
    ],
)
def test_logged_path_hides_any_spelling_of_the_endpoint(path: str) -> None:
    assert logged_path(path) == LOGGED_PATH


def test_logged_path_leaves_other_paths() -> None:
    assert logged_path("/premium/callbacks/x") == "/premium/callbacks/x"
    assert logged_path("/a%20b") == "/a%20b"


def test_the_log_redactor_hides_a_callback_path_once() -> None:
    from gateway.logs import Redactor

    redactor = Redactor()
    line = 'POST /_paywall/callbacks/s3cret-s3cret-s3cret?x HTTP/1.1" 200'
    assert redactor.text(line) == 'POST /_paywall/callbacks/[redacted]?x HTTP/1.1" 200'
    assert redactor.text(LOGGED_PATH) == LOGGED_PATH
