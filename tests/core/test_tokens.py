"""The value rules shared by visitors' credentials and platform answers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.tokens import cookie_value, visible_token


@pytest.mark.parametrize(
    ("value", "cookie", "visible"),
    [
        pytest.param("abc-._~!#$%&'()*+/:<=>?@[]^`{|}", True, True, id="punctuation"),
        pytest.param("a" * 4096, True, True, id="longest"),
        pytest.param("a" * 4097, False, False, id="too-long"),
        pytest.param("", False, False, id="empty"),
        pytest.param("a b", False, False, id="space"),
        pytest.param("a;b", False, True, id="semicolon"),
        pytest.param("a,b", False, True, id="comma"),
        pytest.param('a"b', False, True, id="quote"),
        pytest.param("a\\b", False, True, id="backslash"),
        pytest.param("a\r\nb", False, False, id="crlf"),
        pytest.param("a\x00", False, False, id="nul"),
        pytest.param("a\x7f", False, False, id="del"),
        pytest.param("é", False, False, id="non-ascii"),
        pytest.param("a\n", False, False, id="trailing-newline"),
    ],
)
def test_rules(value: str, cookie: bool, visible: bool) -> None:
    assert cookie_value(value) is cookie
    assert visible_token(value) is visible


@given(st.text(alphabet=st.characters(max_codepoint=0x2100), max_size=12))
def test_visible_is_exactly_visible_ascii(value: str) -> None:
    # The rule as the regular expression it replaced states it.
    assert visible_token(value) is (re.fullmatch(r"[\x21-\x7e]{1,4096}", value) is not None)


@pytest.mark.parametrize("value", ["\t", "a\tb", "\x85", "\xa0", "a\u2028", "\x1f", "~!"])
def test_visible_edges(value: str) -> None:
    assert visible_token(value) is all(0x21 <= ord(char) <= 0x7E for char in value)
