"""The simulator answers exactly as the OpenAPI subset documents.

For every response: the status is one the spec lists for that operation, the Content-Type is
JSON, and the body validates against that status's schema. Cases cover success and error paths
of every operation the simulator serves.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from gateway.sandbox.app import ROUTES, SandboxOptions
from gateway.sandbox.wire import format_instant
from tests.sandbox.conftest import API, ClientFactory, FakeClock

# Known gaps in the spec, answered the way the rest of the API answers. Each is reported in
# the simulator's docs; the body must still validate against the named schema.
SPEC_GAPS: dict[tuple[str, int], str] = {
    # The spec lists no 400 for updateAccessRightForCustomer, but an invalid body has to be
    # rejected somehow; the simulator answers 400 + validationErrors like every other operation.
    ("updateAccessRightForCustomer", 400): "#/components/schemas/ErrorResult",
}

RFC3339_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
DAILY_TIME = r"^\d{2}:\d{2}:\d{2}$"


@pytest.fixture(scope="module")
def spec(openapi_spec: dict[str, Any]) -> dict[str, Any]:
    return openapi_spec


@pytest.fixture(scope="module")
def operations(spec: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (METHOD, path, responses)."""
    found = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                found[op["operationId"]] = (method.upper(), path, op["responses"])
    return found


def _validator(spec: dict[str, Any], ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref, "components": spec["components"]})


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_ref(spec: dict[str, Any], responses: dict[str, Any], op_id: str, status: int) -> str:
    if (op_id, status) in SPEC_GAPS:
        return SPEC_GAPS[(op_id, status)]
    assert str(status) in responses, (
        f"{op_id} answered {status}; the spec lists only {sorted(responses)}"
    )
    ref: str = _resolve(spec, responses[str(status)])["content"]["application/json"]["schema"][
        "$ref"
    ]
    return ref


def _check_formats(body: Any) -> None:
    """Format checks the schema cannot do: instants are RFC 3339 UTC, windows are HH:MM:SS.

    (The spec declares accessTimeStart/End as ``date-time`` while its examples use
    ``"06:00:00"``; the simulator follows the examples, which is what the API sends.)
    """
    items = body.get("items", []) if isinstance(body, dict) else []
    for item in items:
        for key in (
            "lifeTimeStart",
            "lifeTimeEnd",
            "pausedTimeStart",
            "pausedTimeEnd",
            "maxCacheDate",
            "createdDate",
            "changedDate",
        ):
            assert key in item, f"item lacks {key}"
            assert item[key] is None or re.match(RFC3339_UTC, item[key]), item[key]
        for key in ("accessTimeStart", "accessTimeEnd"):
            assert key in item, f"item lacks {key}"
            assert item[key] is None or re.match(DAILY_TIME, item[key]), item[key]


async def conform(
    resp: ClientResponse,
    op_id: str,
    spec: dict[str, Any],
    operations: dict[str, tuple[str, str, dict[str, Any]]],
) -> Any:
    """Assert the response is documented for ``op_id``; return its JSON body."""
    _, _, responses = operations[op_id]
    ref = _schema_ref(spec, responses, op_id, resp.status)
    assert resp.content_type == "application/json", resp.content_type
    body = await resp.json()
    errors = sorted(_validator(spec, ref).iter_errors(body), key=str)
    assert not errors, f"{op_id} {resp.status} does not match {ref}: {errors[0].message}"
    _check_formats(body)
    return body


# --- table of single-request cases ----------------------------------------------------------

Row = tuple[Any, ...]  # (case id, url below the prefix, expected status[, request kwargs])


def cases(op_id: str, method: str, rows: list[Row]) -> list[Any]:
    return [
        pytest.param(op_id, method, API + url, extra[0] if extra else {}, status, id=case_id)
        for case_id, url, status, *extra in rows
    ]


RIGHT = {"accessRightUniqueId": "extra-1", "lifeTimeStart": "2025-01-01T00:00:00Z",
         "lifeTimeEnd": None, "accessTimeStart": "06:00:00", "accessTimeEnd": "18:00",
         "data": {"key": "value"}, "blocked": False}  # fmt: skip
BAD_RIGHT = {"accessRightUniqueId": "extra-2", "lifeTimeEnd": "tomorrow",
             "accessTimeStart": "25:00", "blocked": "yes", "data": {"k": 1}}  # fmt: skip
BAD_JSON = {"data": "{not json", "headers": {"Content-Type": "application/json"}}
HAS_ACCESS_URL = "/accessRights/{}/hasAccess?accessRightUniqueIds=premium"

CASES = [
    *cases("validateCustomerSession", "GET", [
        ("validate-ok", "/sessions/validate?sessionToken=demo-session-plain", 200),
        ("validate-unknown", "/sessions/validate?sessionToken=nonsense", 401),
        ("validate-expired", "/sessions/validate?sessionToken=demo-session-expired", 401),
        ("validate-missing", "/sessions/validate", 400),
        ("validate-empty", "/sessions/validate?sessionToken=", 400),
        ("validate-too-long", "/sessions/validate?sessionToken=" + "x" * 10_001, 400),
    ]),
    *cases("createCustomerSession", "POST", [
        ("create-session-ok", "/sessions/100001", 202, {"json": {"os": "Linux", "country": "DE"}}),
        ("create-session-no-body", "/sessions/100001", 202),
        ("create-session-unknown", "/sessions/199999", 400, {"json": {}}),
        ("create-session-non-numeric", "/sessions/abc", 400, {"json": {}}),
        ("create-session-bad-fields", "/sessions/100001", 400,
         {"json": {"os": 7, "country": "DEU"}}),
        ("create-session-bad-json", "/sessions/100001", 400, BAD_JSON),
        ("create-session-not-object", "/sessions/100001", 400, {"json": [1, 2]}),
    ]),
    *cases("createTransferToken", "POST", [
        ("transfer-create-ok", "/sessions/transferToken", 200,
         {"json": {"customerSession": "demo-session-plain"}}),
        ("transfer-create-invalid", "/sessions/transferToken", 401,
         {"json": {"customerSession": "nonsense"}}),
        ("transfer-create-expired", "/sessions/transferToken", 401,
         {"json": {"customerSession": "demo-session-expired"}}),
        ("transfer-create-empty", "/sessions/transferToken", 400),
        ("transfer-create-no-session", "/sessions/transferToken", 400, {"json": {"other": 1}}),
        ("transfer-create-bad-json", "/sessions/transferToken", 400, BAD_JSON),
    ]),
    *cases("validateTransferToken", "GET", [
        ("transfer-redeem-unknown", "/sessions/transferToken?transferToken=nonsense", 412),
        ("transfer-redeem-missing", "/sessions/transferToken", 400),
        ("transfer-redeem-too-long", "/sessions/transferToken?transferToken=" + "x" * 51, 400),
    ]),
    *cases("checkAccessOfCustomer", "GET", [
        ("has-access-ok", HAS_ACCESS_URL.format("100001"), 200),
        ("has-access-unknown-customer", HAS_ACCESS_URL.format("199999"), 404),
        ("has-access-non-numeric", HAS_ACCESS_URL.format("x1"), 400),
        ("has-access-missing-ids", "/accessRights/100001/hasAccess", 400),
        ("has-access-empty-ids", "/accessRights/100001/hasAccess?accessRightUniqueIds=,,", 400),
    ]),
    *cases("getAccessRightsForCustomer", "GET", [
        ("get-rights-ok", "/accessRights/100010", 200),
        ("get-rights-none", "/accessRights/100008", 200),
        ("get-rights-unknown", "/accessRights/199999", 404),
        ("get-rights-non-numeric", "/accessRights/abc", 400),
    ]),
    *cases("createAccessRightsForCustomer", "POST", [
        ("create-right-ok", "/accessRights/100008", 201, {"json": RIGHT}),
        ("create-right-exists", "/accessRights/100001", 208,
         {"json": {"accessRightUniqueId": "premium"}}),
        ("create-right-bad-id", "/accessRights/100001", 400,
         {"json": {"accessRightUniqueId": "no spaces!"}}),
        ("create-right-missing-id", "/accessRights/100001", 400, {"json": {"blocked": False}}),
        ("create-right-bad-values", "/accessRights/100001", 400, {"json": BAD_RIGHT}),
        ("create-right-no-body", "/accessRights/100001", 400),
        ("create-right-bad-json", "/accessRights/100001", 400, BAD_JSON),
        ("create-right-unknown-customer", "/accessRights/199999", 404,
         {"json": {"accessRightUniqueId": "extra-3"}}),
    ]),
    *cases("updateAccessRightForCustomer", "PUT", [
        ("update-right-ok", "/accessRights/100001/premium", 200,
         {"json": {"lifeTimeEnd": "2030-01-01T00:00:00.000000Z", "blocked": True}}),
        ("update-right-unknown-right", "/accessRights/100001/nope", 404, {"json": {}}),
        ("update-right-unknown-customer", "/accessRights/199999/premium", 404, {"json": {}}),
        ("update-right-non-numeric", "/accessRights/abc/premium", 404, {"json": {}}),
        ("update-right-bad-body", "/accessRights/100001/premium", 400,
         {"json": {"lifeTimeEnd": 5}}),
    ]),
    *cases("deleteAccessRightForCustomer", "DELETE", [
        ("delete-right-ok", "/accessRights/100001/archive", 202),
        ("delete-right-unknown", "/accessRights/100001/nope", 404),
        ("delete-right-non-numeric", "/accessRights/abc/archive", 400),
    ]),
    *cases("blockCustomerAccessRightItem", "PUT", [
        ("block-ok", "/accessRights/100001/archive/7002/block", 202),
        ("block-subscription-item", "/accessRights/100001/premium/7001/block", 400),
        ("block-unknown-item", "/accessRights/100001/archive/9999/block", 404),
        ("block-unknown-customer", "/accessRights/199999/archive/7002/block", 404),
    ]),
    *cases("unblockCustomerAccessRightItem", "PUT", [
        ("unblock-ok", "/accessRights/100004/premium/7006/unblock", 202),
        ("unblock-unknown-item", "/accessRights/100004/premium/1/unblock", 404),
        ("unblock-non-numeric", "/accessRights/x/premium/7006/unblock", 400),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("op_id", "method", "url", "kwargs", "status"), CASES)
async def test_single_request_conforms(
    client: TestClient,
    spec: dict[str, Any],
    operations: dict[str, tuple[str, str, dict[str, Any]]],
    op_id: str,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    resp = await client.request(method, url, **kwargs)
    assert resp.status == status, await resp.text()
    body = await conform(resp, op_id, spec, operations)
    if status >= 400:
        assert isinstance(body["errorCode"], int)


def test_cases_cover_every_served_operation(
    operations: dict[str, tuple[str, str, dict[str, Any]]],
) -> None:
    served = {(method, path) for method, path, _ in ROUTES}
    by_route = {(m, p): op_id for op_id, (m, p, _) in operations.items()}
    assert served <= set(by_route), f"served but not in the spec: {served - set(by_route)}"
    # A transfer token exchange needs a token first: its success is covered by the flow tests.
    statuses: dict[str, set[int]] = {"validateTransferToken": {200}}
    for param in CASES:
        op_id, _, _, _, status = param.values
        statuses.setdefault(op_id, set()).add(status)
    for route in served:
        seen = statuses.get(by_route[route], set())
        assert any(s < 300 for s in seen), (by_route[route], seen)
        assert any(s >= 400 for s in seen), (by_route[route], seen)


# --- flows ----------------------------------------------------------------------------------


async def test_created_session_validates_and_belongs_to_the_customer(
    client: TestClient, spec: dict[str, Any], operations: dict[str, Any]
) -> None:
    resp = await client.post(f"{API}/sessions/100002", json={"source": "test"})
    token = (await conform(resp, "createCustomerSession", spec, operations))["customerSession"]
    resp = await client.get(f"{API}/sessions/validate", params={"sessionToken": token})
    session = await conform(resp, "validateCustomerSession", spec, operations)
    assert session["customerId"] == "100002"
    assert session["type"] == "CUSTOMER_SESSION"


async def test_transfer_token_is_one_time(
    client: TestClient, spec: dict[str, Any], operations: dict[str, Any]
) -> None:
    resp = await client.post(
        f"{API}/sessions/transferToken", json={"customerSession": "demo-session-windows"}
    )
    token = (await conform(resp, "createTransferToken", spec, operations))["transferToken"]
    assert 0 < len(token) <= 50
    url = f"{API}/sessions/transferToken"
    first = await client.get(url, params={"transferToken": token})
    assert first.status == 200
    body = await conform(first, "validateTransferToken", spec, operations)
    assert body == {"customerSession": "demo-session-windows"}
    again = await client.get(url, params={"transferToken": token})
    assert again.status == 412
    assert (await conform(again, "validateTransferToken", spec, operations))["errorCode"] == 20032


@pytest.mark.parametrize(
    ("after", "status"),
    [pytest.param(29.9, 200, id="just-before-ttl"), pytest.param(30.0, 412, id="at-ttl")],
)
async def test_transfer_token_expires_after_its_ttl(
    client: TestClient,
    clock: FakeClock,
    spec: dict[str, Any],
    operations: dict[str, Any],
    after: float,
    status: int,
) -> None:
    resp = await client.post(
        f"{API}/sessions/transferToken", json={"customerSession": "demo-session-plain"}
    )
    token = (await resp.json())["transferToken"]
    clock.advance(after)
    resp = await client.get(f"{API}/sessions/transferToken", params={"transferToken": token})
    assert resp.status == status
    await conform(resp, "validateTransferToken", spec, operations)


async def test_transfer_token_ttl_is_an_option(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    client = await make_client(SandboxOptions(transfer_token_ttl=5))
    resp = await client.post(
        f"{API}/sessions/transferToken", json={"customerSession": "demo-session-plain"}
    )
    token = (await resp.json())["transferToken"]
    clock.advance(6)
    resp = await client.get(f"{API}/sessions/transferToken", params={"transferToken": token})
    assert resp.status == 412


# Expected per-item accessGranted at FIXED_NOW (12:00 Berlin) for each seeded customer kind.
HAS_ACCESS = [
    pytest.param(
        "100001", "premium,archive", False, True, {"7001": True, "7002": True}, id="plain"
    ),
    pytest.param(
        "100002",
        "daily-window,night-owl",
        False,
        True,
        {"7003": True, "7004": False},
        id="windows-at-noon",
    ),
    pytest.param("100003", "premium", False, False, {"7005": False}, id="paused"),
    pytest.param("100004", "premium", False, False, {"7006": False}, id="blocked-item"),
    pytest.param("100005", "premium", True, False, {"7007": False}, id="blocked-customer"),
    pytest.param("100006", "premium", False, False, {"7008": False}, id="expired-right"),
    pytest.param("100007", "premium", False, True, {"7009": True}, id="short-cache"),
    pytest.param("100008", "premium", False, False, {}, id="no-rights"),
    pytest.param("100009", "premium", False, False, {"7010": False}, id="upcoming"),
    pytest.param("100010", "premium", False, True, {"7011": False, "7012": True}, id="renewed"),
    pytest.param("100011", "premium", False, True, {"7013": True}, id="rolling-cache"),
    pytest.param(
        "100001", "premium,unknown-id", False, True, {"7001": True}, id="unknown-id-ignored"
    ),
]


@pytest.mark.parametrize(("customer", "ids", "blocked", "granted", "items"), HAS_ACCESS)
async def test_has_access_for_each_seeded_customer(
    client: TestClient,
    spec: dict[str, Any],
    operations: dict[str, Any],
    customer: str,
    ids: str,
    blocked: bool,
    granted: bool,
    items: dict[str, bool],
) -> None:
    resp = await client.get(
        f"{API}/accessRights/{customer}/hasAccess", params={"accessRightUniqueIds": ids}
    )
    assert resp.status == 200
    body = await conform(resp, "checkAccessOfCustomer", spec, operations)
    assert body["customerId"] == customer
    assert body["customerBlocked"] is blocked
    assert body["accessGranted"] is granted
    assert {i["itemId"]: i["accessGranted"] for i in body["items"]} == items
    assert {i["accessRightUniqueId"] for i in body["items"]} <= set(ids.split(","))


async def test_crud_round_trip_changes_has_access(
    client: TestClient, spec: dict[str, Any], operations: dict[str, Any]
) -> None:
    async def granted() -> bool:
        resp = await client.get(
            f"{API}/accessRights/100008/hasAccess", params={"accessRightUniqueIds": "premium"}
        )
        return bool(
            (await conform(resp, "checkAccessOfCustomer", spec, operations))["accessGranted"]
        )

    assert not await granted()
    resp = await client.post(f"{API}/accessRights/100008", json={"accessRightUniqueId": "premium"})
    created = await conform(resp, "createAccessRightsForCustomer", spec, operations)
    (item,) = created["items"]
    assert item["itemType"] == "EXTERNAL"
    assert item["createdByType"] == "API"
    assert await granted()

    resp = await client.put(f"{API}/accessRights/100008/premium", json={"blocked": True})
    assert resp.status == 200
    await conform(resp, "updateAccessRightForCustomer", spec, operations)
    assert not await granted()

    url = f"{API}/accessRights/100008/premium/{item['itemId']}"
    resp = await client.put(f"{url}/unblock")
    assert resp.status == 202
    assert await conform(resp, "unblockCustomerAccessRightItem", spec, operations) == {
        "success": True
    }
    assert await granted()
    resp = await client.put(f"{url}/block")
    assert resp.status == 202
    await conform(resp, "blockCustomerAccessRightItem", spec, operations)
    assert not await granted()

    resp = await client.delete(f"{API}/accessRights/100008/premium")
    assert resp.status == 202
    await conform(resp, "deleteAccessRightForCustomer", spec, operations)
    resp = await client.get(f"{API}/accessRights/100008")
    assert (await conform(resp, "getAccessRightsForCustomer", spec, operations))["items"] == []


# --- the edge: api token, injected failures, unknown paths ----------------------------------

ONE_REQUEST_PER_OPERATION = [
    ("validateCustomerSession", "GET", "/sessions/validate?sessionToken=demo-session-plain", {}),
    ("createCustomerSession", "POST", "/sessions/100001", {"json": {}}),
    (
        "createTransferToken",
        "POST",
        "/sessions/transferToken",
        {"json": {"customerSession": "demo-session-plain"}},
    ),
    ("validateTransferToken", "GET", "/sessions/transferToken?transferToken=x", {}),
    (
        "checkAccessOfCustomer",
        "GET",
        "/accessRights/100001/hasAccess?accessRightUniqueIds=premium",
        {},
    ),
    ("getAccessRightsForCustomer", "GET", "/accessRights/100001", {}),
    (
        "createAccessRightsForCustomer",
        "POST",
        "/accessRights/100001",
        {"json": {"accessRightUniqueId": "x-1"}},
    ),
    ("updateAccessRightForCustomer", "PUT", "/accessRights/100001/premium", {"json": {}}),
    ("deleteAccessRightForCustomer", "DELETE", "/accessRights/100001/premium", {}),
    ("blockCustomerAccessRightItem", "PUT", "/accessRights/100001/archive/7002/block", {}),
    ("unblockCustomerAccessRightItem", "PUT", "/accessRights/100001/archive/7002/unblock", {}),
]
EDGE_CASES = [pytest.param(*row, id=row[0]) for row in ONE_REQUEST_PER_OPERATION]


@pytest.mark.parametrize(("op_id", "method", "url", "kwargs"), EDGE_CASES)
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no-token"), pytest.param({"X-plenigo-token": "wrong"}, id="wrong-token")],
)
async def test_api_token_is_checked_first(
    make_client: ClientFactory,
    spec: dict[str, Any],
    operations: dict[str, Any],
    op_id: str,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    headers: dict[str, str],
) -> None:
    # error_rate=1 would answer 500 if the token check did not come first
    client = await make_client(SandboxOptions(api_token="secret", error_rate=1.0))
    resp = await client.request(method, API + url, headers=headers, **kwargs)
    assert resp.status == 401
    body = await conform(resp, op_id, spec, operations)
    assert body == {"errorCode": 99015, "errorMessage": "Api token provided is not authorized."}


async def test_right_api_token_is_accepted(make_client: ClientFactory) -> None:
    client = await make_client(SandboxOptions(api_token="secret"))
    resp = await client.get(
        f"{API}/sessions/validate",
        params={"sessionToken": "demo-session-plain"},
        headers={"X-plenigo-token": "secret"},
    )
    assert resp.status == 200


@pytest.mark.parametrize(("op_id", "method", "url", "kwargs"), EDGE_CASES)
@pytest.mark.parametrize(
    ("options", "status", "code"),
    [
        pytest.param(SandboxOptions(error_rate=1.0), 500, 99500, id="error"),
        pytest.param(SandboxOptions(rate_limit_rate=1.0, retry_after=7), 429, 99429, id="limit"),
    ],
)
async def test_injected_failures_conform(
    make_client: ClientFactory,
    spec: dict[str, Any],
    operations: dict[str, Any],
    op_id: str,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    options: SandboxOptions,
    status: int,
    code: int,
) -> None:
    client = await make_client(options)
    resp = await client.request(method, API + url, **kwargs)
    assert resp.status == status
    assert (await conform(resp, op_id, spec, operations))["errorCode"] == code
    if status == 429:
        assert resp.headers["Retry-After"] == "7"


async def test_injected_failures_follow_the_seeded_rng(make_client: ClientFactory) -> None:
    options = SandboxOptions(error_rate=0.3, rate_limit_rate=0.3)
    client = await make_client(options, rng=random.Random(1234))
    replica = random.Random(1234)
    expected = []
    for _ in range(30):
        draw = replica.random()
        expected.append(500 if draw < 0.3 else 429 if draw < 0.6 else 200)
    seen = []
    for _ in range(30):
        resp = await client.get(f"{API}/sessions/validate?sessionToken=demo-session-plain")
        seen.append(resp.status)
    assert seen == expected
    assert {200, 429, 500} <= set(seen)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        pytest.param("GET", f"{API}/nothing/here", id="unknown-path"),
        pytest.param("GET", "/", id="root"),
        pytest.param("GET", "/api/v2/sessions/validate", id="other-version"),
        pytest.param("PATCH", f"{API}/accessRights/100001", id="wrong-method"),
        pytest.param("GET", f"{API}/accessRights/100001/premium", id="get-on-put-path"),
    ],
)
async def test_unknown_routes_answer_404_with_an_error_body(
    client: TestClient, spec: dict[str, Any], method: str, url: str
) -> None:
    resp = await client.request(method, url)
    assert resp.status == 404
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert not list(_validator(spec, "#/components/schemas/ErrorResultBase").iter_errors(body))
    assert body["errorCode"] == 99404


async def test_unknown_routes_still_need_the_api_token(make_client: ClientFactory) -> None:
    client = await make_client(SandboxOptions(api_token="secret"))
    resp = await client.get(f"{API}/nothing/here")
    assert resp.status == 401


# --- the validator itself ---------------------------------------------------------------------


def test_spec_examples_validate_against_their_schemas(spec: dict[str, Any]) -> None:
    """Sanity check of the validator wiring: the spec's own examples pass, a broken one fails."""
    checked = 0
    for item in spec["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            contents = [op["requestBody"]["content"]] if "requestBody" in op else []
            contents += [r.get("content", {}) for r in op["responses"].values()]
            for content in contents:
                media = content.get("application/json")
                if not media or "examples" not in media:
                    continue
                validator = _validator(spec, media["schema"]["$ref"])
                for example in media["examples"].values():
                    value = _resolve(spec, example)["value"]
                    errors = list(validator.iter_errors(value))
                    assert not errors, (op["operationId"], errors[0].message)
                    checked += 1
    assert checked > 50
    broken = {"customerId": "not-numeric", "customerBlocked": "no", "items": [{"blocked": 1}]}
    validator = _validator(spec, "#/components/schemas/AccessRightDataGranted")
    # pattern, two types, and accessRightUniqueId required three allOf levels down
    assert len(list(validator.iter_errors(broken))) == 4


def test_served_datetimes_match_the_example_style() -> None:
    value = format_instant(datetime(2019, 1, 1, 7, 53, 23, 450961, tzinfo=UTC))
    assert value == "2019-01-01T07:53:23.450961Z"
    assert re.match(RFC3339_UTC, value or "")
