"""Path normalisation: one canonical form, ambiguous spellings refused."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.core.paths import normalise_path, normalise_pattern
from gateway.errors import BadRequest


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Ordinary paths: the fast path returns them as they are.
        pytest.param("/", "/", id="root"),
        pytest.param("/articles/2024/slug.html", "/articles/2024/slug.html", id="ordinary"),
        pytest.param("/news/", "/news/", id="trailing-slash-kept"),
        pytest.param("/a=c/d,e/@f:g/!$&'()*+", "/a=c/d,e/@f:g/!$&'()*+", id="sub-delims"),
        pytest.param("/a.b/c..d/e.", "/a.b/c..d/e.", id="dots-inside-segments"),
        pytest.param("/.well-known/x", "/.well-known/x", id="segment-starting-with-dot"),
        pytest.param("/...", "/...", id="three-dots-is-a-name"),
        # Duplicate slashes.
        pytest.param("//", "/", id="double-slash-root"),
        pytest.param("/a//b", "/a/b", id="double-slash"),
        pytest.param("///a///b///", "/a/b/", id="many-slashes"),
        # Dot segments.
        pytest.param("/.", "/", id="dot-at-root"),
        pytest.param("/a/.", "/a/", id="trailing-dot"),
        pytest.param("/a/./b", "/a/b", id="dot"),
        pytest.param("/a/b/..", "/a/", id="trailing-dot-dot"),
        pytest.param("/a/..", "/", id="dot-dot-to-root"),
        pytest.param("/a/b/../c", "/a/c", id="dot-dot"),
        pytest.param("/a/b/../../c/", "/c/", id="dot-dot-twice"),
        pytest.param("/a/./../b", "/b", id="dot-then-dot-dot"),
        pytest.param("/a//../b", "/b", id="slashes-collapse-before-dot-dot"),
        pytest.param("/a/%2e%2e/b", "/b", id="encoded-dot-dot"),
        pytest.param("/a/%2E./b", "/b", id="half-encoded-dot-dot"),
        pytest.param("/a/%2e/b", "/a/b", id="encoded-dot"),
        pytest.param("/a/.%3B/b", "/a/.%3B/b", id="dot-encoded-semicolon-is-a-name"),
        # Unreserved escapes are decoded, others kept with upper-case hex.
        pytest.param("/%41%7a%30%2D%5F%7E", "/Az0-_~", id="unreserved-decoded"),
        pytest.param("/%7e%7E", "/~~", id="unreserved-any-case"),
        pytest.param("/a%3fb", "/a%3Fb", id="reserved-kept-upper-case"),
        pytest.param("/%3B%2C%40%3A", "/%3B%2C%40%3A", id="reserved-escapes-kept"),
        pytest.param("/%25", "/%25", id="encoded-percent"),
        pytest.param("/%2525", "/%2525", id="no-double-decoding"),
        pytest.param("/%20", "/%20", id="encoded-space"),
        pytest.param("/a%2a", "/a%2A", id="encoded-star-stays-encoded"),
        # Characters a path may not contain are encoded.
        pytest.param("/a b", "/a%20b", id="raw-space"),
        pytest.param('/"<>`{}|^[]', "/%22%3C%3E%60%7B%7D%7C%5E%5B%5D", id="unsafe-ascii"),
        pytest.param("/a?b=c", "/a%3Fb=c", id="question-mark-is-not-a-query"),
        pytest.param("/a#b", "/a%23b", id="hash-is-not-a-fragment"),
        # Non-ASCII: raw characters become UTF-8 escapes, valid escapes are kept.
        pytest.param("/café", "/caf%C3%A9", id="raw-non-ascii"),
        pytest.param("/caf%c3%a9", "/caf%C3%A9", id="encoded-non-ascii-lower-hex"),
        pytest.param("/caf%C3%A9", "/caf%C3%A9", id="encoded-non-ascii"),
        pytest.param("/日本", "/%E6%97%A5%E6%9C%AC", id="raw-cjk"),
        pytest.param("/😀", "/%F0%9F%98%80", id="raw-astral"),
        pytest.param("/%C3%A9é", "/%C3%A9%C3%A9", id="escape-then-raw"),
        pytest.param("/\u0085", "/%C2%85", id="c1-control-is-not-ascii"),
        pytest.param("/%EF%BB%BF", "/%EF%BB%BF", id="bom-is-valid-utf8"),
    ],
)
def test_normalise_path(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected
    assert normalise_path(expected) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param("", "start with '/'", id="empty"),
        pytest.param("a/b", "start with '/'", id="relative"),
        pytest.param("http://host/a", "start with '/'", id="absolute-uri"),
        pytest.param("*", "start with '/'", id="asterisk-form"),
        # Malformed escapes.
        pytest.param("/%zz", "malformed percent-escape", id="bad-hex"),
        pytest.param("/%4", "malformed percent-escape", id="short-escape-at-end"),
        pytest.param("/%4/", "malformed percent-escape", id="short-escape"),
        pytest.param("/a%", "malformed percent-escape", id="trailing-percent"),
        pytest.param("/%+1", "malformed percent-escape", id="signed-hex"),
        pytest.param("/%\u0661\u0662", "malformed percent-escape", id="non-ascii-digits"),
        # Ambiguous characters.
        pytest.param("/a%2Fb", "encoded slash", id="encoded-slash"),
        pytest.param("/a%2fb", "encoded slash", id="encoded-slash-lower"),
        pytest.param("/a%5Cb", "backslash", id="encoded-backslash"),
        pytest.param("/a\\b", "backslash", id="raw-backslash"),
        pytest.param("/a\\..\\b", "backslash", id="backslash-dot-dot"),
        pytest.param("/a%00", "NUL", id="encoded-nul"),
        pytest.param("/a\x00", "NUL", id="raw-nul"),
        pytest.param("/a%0A", "control character", id="encoded-newline"),
        pytest.param("/a%0d%0aSet-Cookie:x", "control character", id="header-injection"),
        pytest.param("/a\tb", "control character", id="raw-tab"),
        pytest.param("/a%7F", "control character", id="encoded-del"),
        pytest.param("/a\x7f", "control character", id="raw-del"),
        # Not valid UTF-8 once decoded.
        pytest.param("/%C3%28", "UTF-8", id="bad-continuation"),
        pytest.param("/%FF", "UTF-8", id="invalid-byte"),
        pytest.param("/%C3", "UTF-8", id="truncated-sequence"),
        pytest.param("/%A9", "UTF-8", id="lone-continuation"),
        pytest.param("/%C0%AF", "UTF-8", id="overlong-slash"),
        pytest.param("/%C0%AE%C0%AE/x", "UTF-8", id="overlong-dot-dot"),
        pytest.param("/%E0%80%AF", "UTF-8", id="overlong-three-bytes"),
        pytest.param("/%ED%A0%80", "UTF-8", id="encoded-surrogate"),
        pytest.param("/%F4%90%80%80", "UTF-8", id="above-max-code-point"),
        pytest.param("/%C3/%A9", "UTF-8", id="sequence-split-by-slash"),
        pytest.param("/%C3é", "UTF-8", id="lead-byte-escape-then-raw"),
        pytest.param("/%E6%97é", "UTF-8", id="escape-interrupted-by-raw"),
        pytest.param("/%FF/..", "UTF-8", id="invalid-in-removed-segment"),
        pytest.param("/\udcff", "UTF-8", id="lone-surrogate-from-surrogateescape"),
        pytest.param("/a\ud800b", "UTF-8", id="lone-high-surrogate"),
        # Climbing above the root.
        pytest.param("/..", "above the root", id="dot-dot-at-root"),
        pytest.param("/../a", "above the root", id="leading-dot-dot"),
        pytest.param("/a/../..", "above the root", id="climb-out"),
        pytest.param("/a/../../b", "above the root", id="climb-out-and-back"),
        pytest.param("/%2e%2e/etc/passwd", "above the root", id="encoded-climb-out"),
        pytest.param("//../a", "above the root", id="slashes-do-not-count-as-segments"),
        # Path parameters on dot segments (Tomcat reads "..;" as "..").
        pytest.param("/free/..;/premium", "'..;'", id="dot-dot-semicolon"),
        pytest.param("/free/..;x=1/premium", "'..;'", id="dot-dot-with-param"),
        pytest.param("/free/%2e%2e;/premium", "'..;'", id="encoded-dot-dot-semicolon"),
        pytest.param("/free/.;/premium", "'.;'", id="dot-semicolon"),
    ],
)
def test_normalise_path_rejects(raw: str, problem: str) -> None:
    # With path parameters allowed, so the "..;" rule is what refuses those cases.
    with pytest.raises(BadRequest, match="bad request path") as caught:
        normalise_path(raw, path_parameters=True)
    assert problem in str(caught.value)
    with pytest.raises(BadRequest):
        normalise_path(raw)
    assert caught.value.status_hint == 400


def test_message_truncates_long_paths() -> None:
    raw = "/" + "x" * 10_000 + "%zz"
    with pytest.raises(BadRequest) as caught:
        normalise_path(raw)
    message = str(caught.value)
    assert len(message) < 200
    assert "10004 characters" in message


def test_ordinary_path_is_returned_as_is() -> None:
    raw = "/articles/2024/05/slug.html"
    assert normalise_path(raw) is raw


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("/caf?/**", "/caf?/**", id="glob-question-mark-kept"),
        pytest.param("/a/*/b", "/a/*/b", id="star"),
        pytest.param("/café/*", "/caf%C3%A9/*", id="non-ascii"),
        pytest.param("/a//b/./c/../**", "/a/b/**", id="normalised"),
    ],
)
def test_normalise_pattern(pattern: str, expected: str) -> None:
    assert normalise_pattern(pattern) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("/premium;x/a", id="param-on-a-segment"),
        pytest.param("/premium;/a", id="empty-param"),
        pytest.param("/premium;jsessionid=1/a", id="jsessionid"),
        pytest.param("/premium/a;", id="trailing-semicolon"),
        pytest.param(";/premium", id="leading-semicolon"),
        pytest.param("/a;x/..", id="param-then-dot-dot"),
        pytest.param("/premium%2e;x/a", id="after-an-escape"),
        pytest.param("/café;x/a", id="after-non-ascii"),
    ],
)
def test_path_parameters_are_refused_by_default(raw: str) -> None:
    # Tomcat, Jetty and Spring serve "/premium;x/a" as "/premium/a": a rule table reading it
    # literally would let a public rule match a premium page.
    with pytest.raises(BadRequest, match="';' path parameters"):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("/premium;x/a", "/premium;x/a", id="kept-literally"),
        pytest.param("/a;b=c/d,e/@f:g/!$&'()*+", "/a;b=c/d,e/@f:g/!$&'()*+", id="sub-delims"),
        pytest.param("/a;x/..", "/", id="params-on-ordinary-segment"),
        pytest.param("/a%3Bx/b", "/a%3Bx/b", id="encoded-semicolon-stays-data"),
    ],
)
def test_path_parameters_allowed_are_ordinary_characters(raw: str, expected: str) -> None:
    assert normalise_path(raw, path_parameters=True) == expected


def test_encoded_semicolon_is_data_by_default() -> None:
    assert normalise_path("/premium%3bx/a") == "/premium%3Bx/a"


def test_dot_dot_semicolon_is_refused_even_with_path_parameters() -> None:
    with pytest.raises(BadRequest, match=r"'\.\.;'"):
        normalise_path("/free/..;/premium", path_parameters=True)


def test_normalise_pattern_rejects_like_paths() -> None:
    with pytest.raises(BadRequest, match="encoded slash"):
        normalise_pattern("/a%2Fb/**")


# Properties on arbitrary input. The token alphabet makes interesting paths likely: dots,
# slashes, escapes (good and bad), semicolons, non-ASCII and characters that need encoding.
_TOKENS = st.sampled_from(
    [
        "/", "/", ".", "..", "a", "Z", "~", ";", "%", "%2e", "%2E", "%2F", "%2f", "%25", "%41",
        "%3f", "%C3", "%A9", "%c3%a9", "%FF", "%00", "é", "😀", " ", "?", "#", "\\", "\x00",
        "\udcff", "*", "%7e", "%5c",
    ]
)  # fmt: skip
_PATHISH = st.lists(st.one_of(_TOKENS, st.text(max_size=3)), max_size=12).map("".join)
_INPUTS = st.one_of(_PATHISH, _PATHISH.map(lambda tail: "/" + tail), st.text())


def _normalise_or_none(raw: str) -> str | None:
    try:
        return normalise_path(raw)
    except BadRequest:
        return None


@given(_INPUTS)
@example("/a/%2e%2e/caf%c3%a9//x/")
def test_idempotent(raw: str) -> None:
    once = _normalise_or_none(raw)
    if once is not None:
        assert normalise_path(once) == once


@given(_INPUTS)
@example("/a/./b/../c//d/")
def test_output_is_canonical(raw: str) -> None:
    out = _normalise_or_none(raw)
    if out is None:
        return
    assert out.startswith("/")
    assert out.isascii()
    for bad in ("//", "/./", "/../", "%2F", "%2f", "%5C", "\\", "\x00", "%00", "?", "#", " "):
        assert bad not in out
    assert not out.endswith(("/.", "/.."))
    assert all(0x20 < ord(char) < 0x7F for char in out)


@given(_INPUTS)
def test_pattern_and_path_agree_without_question_marks(raw: str) -> None:
    if "?" in raw:
        return
    try:
        expected: str | BaseException = normalise_path(raw, path_parameters=True)
    except BadRequest as exc:
        expected = exc
    if isinstance(expected, str):
        assert normalise_pattern(raw) == expected
    else:
        with pytest.raises(BadRequest):
            normalise_pattern(raw)
