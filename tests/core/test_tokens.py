"""The value rules shared by visitors' credentials and platform answers."""

from __future__ import annotations

import pytest

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
