"""Platform values the gateway passes on are checked where the client reads them (issue 9.3).

A customer id becomes the ``X-Paywall-Customer-Id`` header, a cache key and a log field; the
exchanged session token becomes the session cookie. A value that could not go there as it is
must be a :class:`BadPlatformResponse` (so front-ends answer as for an outage), never a value
that fails deeper. So must a JSON answer that names a key twice: it has no single meaning.
The platforms are real HTTP servers on loopback (the fixtures of test_client.py).
"""

# ruff: noqa: F811  (the fixtures of test_client.py, imported by name)

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.errors import BadPlatformResponse, InvalidSession, PlatformAuthError
from gateway.platform.models import is_customer_id
from tests.platform.test_client import (  # noqa: F401
    SESSION_TOKEN,
    TRANSFER_TOKEN,
    MakeClient,
    Recorder,
    fake,
    http,
    make_client,
    recorder,
    reply,
)

ASKED = "100001"
GRANT_ITEM = {"accessRightUniqueId": "premium", "accessGranted": True}

# Customer ids that must never reach a header, a cache key or a log line.
BAD_CUSTOMER_IDS = [
    pytest.param("", id="empty"),
    pytest.param("100001\r\nX-Injected: 1", id="crlf-header-injection"),
    pytest.param("100001\n", id="trailing-lf"),
    pytest.param("100001\r", id="trailing-cr"),
    pytest.param("100\x0001", id="nul"),
    pytest.param("100001\x7f", id="del"),
    pytest.param("\x1b[31m100001", id="escape-sequence"),
    pytest.param("100001\t", id="tab"),
    pytest.param(" 100001", id="leading-space"),
    pytest.param("100 001", id="inner-space"),
    pytest.param("\uff11\uff10\uff10\uff10\uff10\uff11", id="fullwidth-digits"),
    pytest.param("\u0661\u0660\u0660\u0660\u0660\u0661", id="arabic-indic-digits"),
    pytest.param("100001é", id="non-ascii"),
    pytest.param("1" * 19, id="19-digits"),
    pytest.param("1" * 100_000, id="absurdly-long"),
    pytest.param("100001:any:premium", id="colon-cache-key-separator"),
    pytest.param("1,2", id="comma"),
    pytest.param("1;2", id="semicolon"),
    pytest.param("abc", id="letters"),
    pytest.param("-1", id="sign"),
    pytest.param("1.0", id="decimal"),
    pytest.param("../1", id="path"),
]
GOOD_CUSTOMER_IDS = [
    pytest.param("0", id="one-digit"),
    pytest.param("100001", id="usual"),
    pytest.param("9" * 18, id="18-digits"),
    pytest.param("000123", id="leading-zeros"),
]

# Session tokens that cannot be a cookie value as they are.
BAD_SESSION_TOKENS = [
    pytest.param("", id="empty"),
    pytest.param("tok en", id="space"),
    pytest.param("tok;en", id="semicolon"),
    pytest.param("tok,en", id="comma"),
    pytest.param('tok"en', id="double-quote"),
    pytest.param("tok\\en", id="backslash"),
    pytest.param("tok\r\nSet-Cookie: evil=1", id="crlf-header-injection"),
    pytest.param("tok\n", id="lf"),
    pytest.param("tok\x00", id="nul"),
    pytest.param("tok\tx", id="tab"),
    pytest.param("tok\x7f", id="del"),
    pytest.param("tök", id="non-ascii"),
    pytest.param("tok\u2028", id="line-separator"),
    pytest.param("t" * 4097, id="4097-chars"),
    pytest.param("t" * 200_000, id="absurdly-long"),
]
GOOD_SESSION_TOKENS = [
    pytest.param("t", id="one-char"),
    pytest.param("t" * 4096, id="4096-chars"),
    pytest.param(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        id="jwt",
    ),
    pytest.param("YWJj+/==", id="base64-padding"),
    pytest.param("!#$%&'()*+-./:<=>?@[]^_`{|}~", id="every-allowed-punctuation"),
]


def _has_access(**fields: object) -> dict[str, object]:
    return {"customerBlocked": False, "accessGranted": True, "items": [GRANT_ITEM], **fields}


# -- customer ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("customer_id", BAD_CUSTOMER_IDS)
async def test_validate_refuses_unfit_customer_ids(
    make_client: MakeClient, recorder: Recorder, customer_id: str
) -> None:
    client, platform = make_client(reply(200, {"customerId": customer_id}))
    with pytest.raises(BadPlatformResponse) as raised:
        await client.customer_for_session(SESSION_TOKEN)
    assert len(platform.seen) == 1  # not retried: the platform would say it again
    assert recorder.sleeps == []
    if customer_id:
        assert customer_id not in str(raised.value)  # never quoted into a log line


@pytest.mark.parametrize("customer_id", GOOD_CUSTOMER_IDS)
async def test_validate_accepts_customer_ids_the_schema_allows(
    make_client: MakeClient, customer_id: str
) -> None:
    client, _ = make_client(reply(200, {"customerId": customer_id}))
    assert await client.customer_for_session(SESSION_TOKEN) == customer_id


@pytest.mark.parametrize("customer_id", BAD_CUSTOMER_IDS)
async def test_has_access_refuses_unfit_echoed_customer_ids(
    make_client: MakeClient, customer_id: str
) -> None:
    client, platform = make_client(reply(200, _has_access(customerId=customer_id)))
    with pytest.raises(BadPlatformResponse):
        await client.check_access(ASKED, ["premium"])
    assert len(platform.seen) == 1


@pytest.mark.parametrize("customer_id", ["a b", "1.5", "x", "1" * 19])
async def test_has_access_refuses_an_unfit_id_even_when_it_echoes_the_question(
    make_client: MakeClient, customer_id: str
) -> None:
    # The client is only ever asked about ids it validated; if one slipped in anyway, the
    # echo agreeing with it must not make it acceptable.
    client, _ = make_client(reply(200, _has_access(customerId=customer_id)))
    with pytest.raises(BadPlatformResponse):
        await client.check_access(customer_id, ["premium"])


@pytest.mark.parametrize("customer_id", GOOD_CUSTOMER_IDS)
async def test_has_access_accepts_good_echoes_and_none(
    make_client: MakeClient, customer_id: str
) -> None:
    client, _ = make_client(
        reply(200, _has_access(customerId=customer_id)),
        reply(200, _has_access(customerId=None)),
        reply(200, _has_access()),
    )
    for _ in range(3):
        payload = await client.check_access(customer_id, ["premium"])
        assert (payload.customer_id, payload.granted) == (customer_id, True)


@pytest.mark.parametrize("schema", ["CustomerSession", "AccessRightDataGranted"])
def test_the_rule_is_the_schemas_pattern(openapi_spec: dict[str, Any], schema: str) -> None:
    # Exactly what the API schema allows: no real customer is turned away, nothing else passes.
    field = openapi_spec["components"]["schemas"][schema]["properties"]["customerId"]
    # ECMA-262 semantics: "$" is the very end (Python's also matches before a final "\n").
    matches = re.compile(field["pattern"].removesuffix("$") + r"\Z").search
    values = [param.values[0] for param in (*BAD_CUSTOMER_IDS, *GOOD_CUSTOMER_IDS)]
    for value in [*values, "1" * 18, "12"]:
        assert isinstance(value, str)
        assert bool(is_customer_id(value)) == bool(matches(value)), repr(value[:30])


# -- the exchanged session token ------------------------------------------------------------


@pytest.mark.parametrize("token", BAD_SESSION_TOKENS)
async def test_exchange_refuses_tokens_unfit_for_a_cookie(
    make_client: MakeClient, recorder: Recorder, token: str
) -> None:
    client, platform = make_client(reply(200, {"customerSession": token}))
    with pytest.raises(BadPlatformResponse) as raised:
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert len(platform.seen) == 1  # one-time token: never asked twice
    assert recorder.sleeps == []
    if token:
        assert token not in str(raised.value)


@pytest.mark.parametrize("token", GOOD_SESSION_TOKENS)
async def test_exchange_accepts_every_cookie_value(make_client: MakeClient, token: str) -> None:
    client, _ = make_client(reply(200, {"customerSession": token}))
    assert await client.exchange_transfer_token(TRANSFER_TOKEN) == token


@pytest.mark.parametrize("value", [pytest.param(123, id="number"), pytest.param([], id="list")])
async def test_exchange_refuses_tokens_that_are_not_strings(
    make_client: MakeClient, value: object
) -> None:
    client, _ = make_client(reply(200, {"customerSession": value}))
    with pytest.raises(BadPlatformResponse):
        await client.exchange_transfer_token(TRANSFER_TOKEN)


# -- keys named twice -----------------------------------------------------------------------

DENIED_THEN_GRANTED = (
    b'{"customerId": "100001", "customerBlocked": false, "accessGranted": false, '
    b'"items": [{"accessRightUniqueId": "premium", "accessGranted": true}], "accessGranted": true}'
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DENIED_THEN_GRANTED, id="top-level-access-granted"),
        pytest.param(
            b'{"customerId": "100001", "customerBlocked": true, "customerBlocked": false,'
            b' "accessGranted": true, "items": []}',
            id="top-level-customer-blocked",
        ),
        pytest.param(
            b'{"customerId": "999", "customerId": "100001", "accessGranted": true, "items": []}',
            id="top-level-customer-id",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [{"accessRightUniqueId":'
            b' "premium", "accessGranted": false, "accessGranted": true}]}',
            id="item-access-granted",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [{"accessRightUniqueId":'
            b' "premium", "blocked": true, "blocked": false, "accessGranted": true}]}',
            id="item-blocked",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [{"accessRightUniqueId":'
            b' "archive", "accessRightUniqueId": "premium", "accessGranted": true}]}',
            id="item-access-right-id",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [{"accessRightUniqueId":'
            b' "premium", "accessGranted": true, "lifeTimeEnd": "2020-01-01T00:00:00Z",'
            b' "lifeTimeEnd": null}]}',
            id="item-lifetime-end",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [], "items": '
            b'[{"accessRightUniqueId": "premium", "accessGranted": true}]}',
            id="items-twice",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": false, "access\\u0047ranted": true,'
            b' "items": []}',
            id="escaped-spelling",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "accessGranted": true, "items": []}',
            id="same-value-twice",
        ),
        pytest.param(
            b'{"customerId": "100001", "accessGranted": true, "items": [],'
            b' "unknownField": {"deep": [{"x": 1, "x": 2}]}}',
            id="deep-in-an-ignored-field",
        ),
    ],
)
async def test_has_access_refuses_repeated_keys(make_client: MakeClient, body: bytes) -> None:
    client, platform = make_client(reply(200, body))
    with pytest.raises(BadPlatformResponse, match="twice"):
        await client.check_access(ASKED, ["premium", "archive"])
    assert len(platform.seen) == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"customerId": "999", "customerId": "100001"}', id="customer-id"),
        pytest.param(b'{"customerId": "100001", "customerId": "100001"}', id="same-value"),
        pytest.param(b'{"customerId": "100001", "type": "A", "type": "B"}', id="ignored-field"),
    ],
)
async def test_validate_refuses_repeated_keys(make_client: MakeClient, body: bytes) -> None:
    client, _ = make_client(reply(200, body))
    with pytest.raises(BadPlatformResponse, match="twice"):
        await client.customer_for_session(SESSION_TOKEN)


async def test_exchange_refuses_repeated_keys(make_client: MakeClient) -> None:
    body = b'{"customerSession": "first", "customerSession": "second"}'
    client, platform = make_client(reply(200, body))
    with pytest.raises(BadPlatformResponse, match="twice"):
        await client.exchange_transfer_token(TRANSFER_TOKEN)
    assert len(platform.seen) == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"errorCode": 99015, "errorCode": 1, "errorMessage": "x"}', id="first-wins"),
        pytest.param(b'{"errorCode": 1, "errorCode": 99015, "errorMessage": "x"}', id="last-wins"),
    ],
)
async def test_error_bodies_with_repeated_keys_are_refused(
    make_client: MakeClient, body: bytes
) -> None:
    # Which errorCode counts decides between "our API token is bad" and "the visitor's is".
    for call in ("customer_for_session", "exchange_transfer_token"):
        client, _ = make_client(reply(401, body))
        with pytest.raises(BadPlatformResponse, match="twice"):
            await getattr(client, call)("token")


async def test_error_bodies_without_repeats_keep_their_meaning(make_client: MakeClient) -> None:
    client, _ = make_client(reply(401, {"errorCode": 99015, "errorMessage": "x"}))
    with pytest.raises(PlatformAuthError):
        await client.customer_for_session(SESSION_TOKEN)
    client, _ = make_client(reply(401, b"not json at all"))
    with pytest.raises(InvalidSession):
        await client.customer_for_session(SESSION_TOKEN)


async def test_the_same_key_in_different_objects_is_fine(make_client: MakeClient) -> None:
    body = {
        "customerId": ASKED,
        "accessGranted": True,
        "items": [
            {"accessRightUniqueId": "premium", "accessGranted": True},
            {"accessRightUniqueId": "archive", "accessGranted": False},
        ],
        "nested": {"accessGranted": 1, "items": {"accessGranted": 2}},
    }
    client, _ = make_client(reply(200, json.dumps(body).encode()))
    payload = await client.check_access(ASKED, ["premium", "archive"])
    assert [item.access_right_id for item in payload.items] == ["premium", "archive"]
