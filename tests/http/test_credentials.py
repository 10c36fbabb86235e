"""Reading credentials: one reading or a BadRequest, never a pick between two."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.http.credentials import (
    bearer_token,
    session_cookie,
    session_token,
    strip_session_cookie,
    transfer_token,
)
from gateway.http.names import cookie_name, header_name, param_name

NAME = "paywall_session"


def headers(*lines: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(lines))


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        pytest.param(["paywall_session=T"], "T", id="plain"),
        pytest.param(["a=1; paywall_session=T; b=2"], "T", id="among-others"),
        pytest.param(["a=1", "paywall_session=T"], "T", id="second-line"),
        pytest.param(['paywall_session="T"'], "T", id="quoted"),
        pytest.param(["paywall_session=T "], "T", id="trailing-space"),
        pytest.param([" paywall_session =T"], "T", id="spaces-around-the-name"),
        pytest.param(["paywall_session="], None, id="cleared"),
        pytest.param(["paywall_session"], None, id="name-only"),
        pytest.param(["paywall_session= "], None, id="space-only"),
        pytest.param(["a=1, b=2"], None, id="commas-without-the-name"),
        pytest.param(["paywall_sessionx=T; xpaywall_session=U"], None, id="longer-names"),
        pytest.param([], None, id="no-cookie"),
    ],
)
def test_one_reading(cookies: list[str], expected: str | None) -> None:
    assert session_cookie(headers(*[("Cookie", c) for c in cookies]), NAME) == expected


@pytest.mark.parametrize(
    ("cookies", "problem"),
    [
        pytest.param(["paywall_session=; paywall_session=T"], "more than once", id="empty-first"),
        pytest.param(["paywall_session=T; paywall_session=T"], "more than once", id="same-twice"),
        pytest.param(["paywall_session=T", "paywall_session="], "more than once", id="two-lines"),
        pytest.param(["paywall_session; paywall_session=T"], "more than once", id="name-only"),
        pytest.param(["PAYWALL_SESSION=T"], "another spelling", id="upper-case"),
        pytest.param(["Paywall_Session=; paywall_session=T"], "another spelling", id="mixed-case"),
        pytest.param(["paywall%5Fsession=T"], "another spelling", id="percent-encoded"),
        pytest.param(["paywall_session, x=1"], "comma", id="name-before-comma"),
        pytest.param(["x=1, paywall_session=; paywall_session=T"], "comma", id="after-comma"),
        pytest.param(["x=1, paywall_session=T"], "comma", id="only-after-comma"),
        pytest.param(["paywall_session=T, x=1"], "comma", id="comma-in-value"),
        pytest.param(["paywall_session=T;U"], None, id="not-ambiguous-second-pair"),
        pytest.param(["paywall_session=a b"], "malformed", id="space-in-value"),
        pytest.param(["paywall_session=a\x01"], "malformed", id="control-character"),
        pytest.param(["paywall_session=\u00e9"], "malformed", id="non-ascii"),
        pytest.param(["paywall_session=" + "a" * 4097], "malformed", id="too-long"),
        pytest.param(["pa\u017fwall_session=T"], None, id="long-s-is-another-name"),
    ],
)
def test_two_readings_are_refused(cookies: list[str], problem: str | None) -> None:
    lines = headers(*[("Cookie", c) for c in cookies])
    if problem is None:
        session_cookie(lines, NAME)  # not the name: no error
        return
    with pytest.raises(BadRequest, match=problem):
        session_cookie(lines, NAME)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([("X-plenigo-customer-session", "T")], "T", id="session-header"),
        pytest.param([("Authorization", "Bearer T")], "T", id="bearer"),
        pytest.param([("Authorization", "bearer\tT")], "T", id="bearer-tab"),
        pytest.param([("Authorization", "Basic eDp5")], None, id="basic-ignored"),
        pytest.param(
            [("Cookie", "paywall_session=C"), ("Authorization", "Bearer B")], "C", id="cookie-first"
        ),
        pytest.param(
            [("X-plenigo-customer-session", "H"), ("Authorization", "Bearer B")],
            "H",
            id="header-before-bearer",
        ),
    ],
)
def test_precedence(lines: list[tuple[str, str]], expected: str | None) -> None:
    assert session_token(headers(*lines), NAME) == expected


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([("X-plenigo-customer-session", "T")] * 2, id="session-header-twice"),
        pytest.param([("Authorization", "Bearer T")] * 2, id="authorization-twice"),
        pytest.param([("X_plenigo_customer_session", "T")], id="underscore-spelling"),
        # Even where another source wins: the duplicate is still two readings for someone.
        pytest.param(
            [("Cookie", "paywall_session=C"), *[("Authorization", "Bearer T")] * 2],
            id="duplicate-beside-a-cookie",
        ),
        pytest.param([("Authorization", "Bearer")], id="empty-bearer"),
        pytest.param([("X-plenigo-customer-session", "a b")], id="space-in-header"),
    ],
)
def test_ambiguous_or_malformed_headers_are_refused(lines: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        session_token(headers(*lines), NAME)


def test_bearer_token() -> None:
    assert bearer_token("Bearer  T ") == "T"
    assert bearer_token("BEARER T") == "T"
    assert bearer_token("Bearer") == ""
    assert bearer_token("Bearerx T") is None
    assert bearer_token("") is None


def test_strip_session_cookie_removes_every_spelling() -> None:
    header = "a=1; paywall_session=T; PAYWALL_SESSION=U; paywall%5Fsession=V;  b=2 ;"
    assert strip_session_cookie(header, NAME) == "a=1; b=2"


def test_names() -> None:
    assert param_name("transfer%54oken=x") == "transfertoken"
    assert param_name("TRANSFERTOKEN") == "transfertoken"
    assert cookie_name(" PAYWALL%5Fsession =x") == "paywall_session"
    assert header_name("X_Paywall_Access") == "x-paywall-access"


# Property: whenever a value is returned, the Cookie lines hold exactly one pair naming the
# cookie in any loose spelling (split at ";" and ","), spelled exactly, with that value.
_NAMES = st.sampled_from(
    [NAME, "PAYWALL_SESSION", "paywall%5Fsession", f" {NAME}", f"{NAME} ", "a", "b", "x"]
)
_VALUES = st.sampled_from(["", "T", "U", '"T"', " ", "T U", "T,x"])
_PAIRS = st.tuples(_NAMES, st.sampled_from(["=", ""]), _VALUES).map("".join)
_LINE = st.lists(st.tuples(_PAIRS, st.sampled_from(["; ", ";", ", "])), min_size=1, max_size=4).map(
    lambda pairs: "".join(pair + sep for pair, sep in pairs)[:-1]
)


@given(st.lists(_LINE, min_size=1, max_size=3))
def test_a_value_comes_only_from_a_single_exact_pair(lines: list[str]) -> None:
    try:
        value = session_cookie(headers(*[("Cookie", line) for line in lines]), NAME)
    except BadRequest:
        return
    pieces = [p for line in lines for p in re.split("[;,]", line)]
    named = [p for p in pieces if cookie_name(p) == NAME]
    if value is None:
        assert len(named) <= 1
        return
    assert len(named) == 1
    key, _, raw = named[0].partition("=")
    assert key.strip() == NAME
    assert raw.strip().strip('"') == value


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("transferToken=T", "T", id="plain"),
        pytest.param("a=1&TRANSFERTOKEN=T", "T", id="any-case"),
        pytest.param("transfer%54oken=T", "T", id="encoded-name"),
        pytest.param("a=1;transferToken=T", "T", id="semicolon-separated"),
        pytest.param("transferToken=", None, id="empty"),
        pytest.param("transferTokens=T", None, id="another-name"),
    ],
)
def test_transfer_token(query: str, expected: str | None) -> None:
    assert transfer_token(query, "transferToken") == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("transferToken=T&transferToken=T", id="same-twice"),
        pytest.param("transferToken=&transferToken=T", id="empty-first"),
        pytest.param("transferToken=T&TransferToken=U", id="two-spellings"),
        pytest.param("transferToken=a%20b", id="space"),
        pytest.param("transferToken=a%0D%0Ab", id="crlf"),
    ],
)
def test_transfer_token_read_two_ways_or_malformed(query: str) -> None:
    with pytest.raises(BadRequest):
        transfer_token(query, "transferToken")
