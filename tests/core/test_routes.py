"""Route rules: globs, methods, first match wins, the default policy."""

from __future__ import annotations

import re

import pytest

from gateway.core.paths import normalise_path
from gateway.core.policy import AccessRule
from gateway.core.routes import Route, RouteKind, RouteMatch, RouteTable, compile_pattern

RULE = AccessRule(("premium",))
OTHER_RULE = AccessRule(("archive", "premium"), require="all")
GET_HEAD = frozenset({"GET", "HEAD"})


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        pytest.param("/", "/", True, id="root"),
        pytest.param("/", "/a", False, id="root-only"),
        pytest.param("/news", "/news", True, id="literal"),
        pytest.param("/news", "/news/", False, id="trailing-slash-significant"),
        pytest.param("/news/", "/news/", True, id="literal-trailing-slash"),
        pytest.param("/news", "/newsletter", False, id="literal-is-whole-path"),
        pytest.param("/a.b", "/axb", False, id="dot-is-literal"),
        pytest.param("/a+b(c)", "/a+b(c)", True, id="regex-chars-are-literal"),
        # "*" within one segment.
        pytest.param("/news/*", "/news/today", True, id="star"),
        pytest.param("/news/*", "/news/", True, id="star-matches-empty"),
        pytest.param("/news/*", "/news", False, id="star-needs-the-slash"),
        pytest.param("/news/*", "/news/a/b", False, id="star-stays-in-segment"),
        pytest.param("/static/*.css", "/static/site.css", True, id="star-suffix"),
        pytest.param("/static/*.css", "/static/css/site.css", False, id="star-suffix-one-level"),
        pytest.param("/a/*/c", "/a/b/c", True, id="star-middle"),
        # "?" is one character within a segment.
        pytest.param("/v?", "/v1", True, id="question"),
        pytest.param("/v?", "/v", False, id="question-needs-a-character"),
        pytest.param("/v?", "/v12", False, id="question-only-one"),
        pytest.param("/v?/x", "/v//x", False, id="question-not-slash"),
        pytest.param("/caf?", "/caf%C3%A9", True, id="question-one-utf8-character"),
        pytest.param("/x?", "/x%F0%9F%98%80", True, id="question-four-byte-character"),
        pytest.param("/x?", "/x%3F", True, id="question-escaped-ascii"),
        pytest.param("/x?", "/x%C3%A9%C3%A9", False, id="question-not-two-characters"),
        pytest.param("/x??", "/x%C3%A9%C3%A9", True, id="two-questions"),
        # "**" is zero or more segments.
        pytest.param("/premium/**", "/premium", True, id="globstar-zero"),
        pytest.param("/premium/**", "/premium/", True, id="globstar-trailing-slash"),
        pytest.param("/premium/**", "/premium/a/b", True, id="globstar-deep"),
        pytest.param("/premium/**", "/premiumx", False, id="globstar-segment-boundary"),
        pytest.param("/premium/**", "/x/premium/a", False, id="globstar-anchored"),
        pytest.param("/a/**/b", "/a/b", True, id="globstar-middle-zero"),
        pytest.param("/a/**/b", "/a/x/y/b", True, id="globstar-middle-many"),
        pytest.param("/a/**/b", "/a/xb", False, id="globstar-middle-boundary"),
        pytest.param("/a/**/b", "/a/b/c", False, id="globstar-middle-anchored"),
        pytest.param("/**", "/", True, id="globstar-all-root"),
        pytest.param("/**", "/any/thing", True, id="globstar-all"),
        pytest.param("/**/*.pdf", "/a.pdf", True, id="leading-globstar"),
        pytest.param("/**/*.pdf", "/x/y/a.pdf", True, id="leading-globstar-deep"),
        pytest.param("/a/**/**/b", "/a/b", True, id="double-globstar"),
        pytest.param("/a/**/", "/a/", True, id="globstar-then-slash"),
        pytest.param("/a/**/", "/a/x/", True, id="globstar-then-slash-deep"),
        pytest.param("/a/**/", "/a/x", False, id="globstar-then-slash-needs-slash"),
        # Patterns are normalised like requests.
        pytest.param("/café/**", normalise_path("/café/x"), True, id="non-ascii-pattern"),
        pytest.param("/caf%c3%a9", normalise_path("/café"), True, id="escaped-pattern"),
        pytest.param("/%7Euser", "/~user", True, id="unreserved-escape-in-pattern"),
        pytest.param("/a//b/./c", "/a/b/c", True, id="pattern-slashes-and-dots"),
        pytest.param("/a b", normalise_path("/a b"), True, id="space-in-pattern"),
    ],
)
def test_compile_pattern(pattern: str, path: str, matches: bool) -> None:
    assert (compile_pattern(pattern).fullmatch(path) is not None) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("/a**b", "whole segment", id="globstar-inside-segment"),
        pytest.param("/a/**b", "whole segment", id="globstar-prefix"),
        pytest.param("/a/***", "whole segment", id="triple-star"),
        pytest.param("premium/**", "start with '/'", id="relative"),
        pytest.param("/a%2Fb", "encoded slash", id="encoded-slash"),
        pytest.param("/../a", "above the root", id="above-root"),
        pytest.param("/%zz", "malformed", id="bad-escape"),
    ],
)
def test_compile_pattern_rejects(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(pattern)) as caught:
        compile_pattern(pattern)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        pytest.param("/Premium/**", "/premium/x", True, id="lower"),
        pytest.param("/premium/**", "/PREMIUM/X", True, id="upper"),
        pytest.param("/caf?", "/CAF%C3%A9", True, id="question"),
        pytest.param("/k", "/\u212a", False, id="ascii-only-folding"),
        pytest.param("/caf%C3%A9", "/caf%C3%89", False, id="non-ascii-not-folded"),
    ],
)
def test_compile_pattern_case_insensitive(pattern: str, path: str, matches: bool) -> None:
    compiled = compile_pattern(pattern, case_sensitive=False)
    assert (compiled.fullmatch(path) is not None) is matches


def test_compile_pattern_case_sensitive_by_default() -> None:
    assert compile_pattern("/Premium").fullmatch("/premium") is None


PREMIUM = Route("/premium/**", GET_HEAD, RouteKind.PROTECTED, RULE)
PREMIUM_FREE = Route("/premium/free/**", GET_HEAD, RouteKind.PUBLIC)
ARCHIVE = Route("/archive/*", None, RouteKind.PROTECTED, OTHER_RULE)
ADMIN = Route("/admin/**", None, RouteKind.DENY)
COMMENTS = Route("/premium/*/comments", frozenset({"POST"}), RouteKind.PUBLIC)
STATIC = Route("/static/**", frozenset({"get"}), RouteKind.PUBLIC)

TABLE = RouteTable([PREMIUM_FREE, PREMIUM, COMMENTS, ARCHIVE, ADMIN, STATIC])


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/premium/a", PREMIUM, id="protected"),
        pytest.param("HEAD", "/premium", PREMIUM, id="head"),
        pytest.param("GET", "/premium/free/a", PREMIUM_FREE, id="first-match-wins"),
        pytest.param("POST", "/premium/a/comments", COMMENTS, id="method-specific"),
        pytest.param("GET", "/premium/a/comments", PREMIUM, id="method-selects-route"),
        pytest.param("POST", "/premium/a", None, id="method-not-covered-default"),
        pytest.param("DELETE", "/archive/2020", ARCHIVE, id="every-method"),
        pytest.param("PROPFIND", "/archive/2020", ARCHIVE, id="unknown-method-every-method"),
        pytest.param("PROPFIND", "/premium/a", None, id="unknown-method-default"),
        pytest.param("GET", "/admin/x", ADMIN, id="deny-route"),
        pytest.param("get", "/premium/a", PREMIUM, id="method-upper-cased"),
        pytest.param("GET", "/static/site.css", STATIC, id="route-methods-upper-cased"),
        pytest.param("GET", "/other", None, id="no-route-default"),
        pytest.param("GET", "/Premium/a", None, id="case-sensitive"),
    ],
)
def test_table_match(method: str, path: str, expected: Route | None) -> None:
    found = TABLE.match(method, path)
    if expected is None:
        assert found == RouteMatch(kind=RouteKind.DENY, rule=None, route=None)
    else:
        assert found == RouteMatch(kind=expected.kind, rule=expected.rule, route=expected)


@pytest.mark.parametrize(
    ("default", "routes", "method", "path", "kind"),
    [
        pytest.param(RouteKind.PUBLIC, [PREMIUM], "GET", "/other", RouteKind.PUBLIC, id="public"),
        pytest.param(RouteKind.DENY, [PREMIUM], "GET", "/other", RouteKind.DENY, id="deny"),
        pytest.param(RouteKind.PUBLIC, [], "GET", "/premium", RouteKind.PUBLIC, id="empty"),
        pytest.param(RouteKind.DENY, [ADMIN], "GET", "/x", RouteKind.DENY, id="any-only"),
        pytest.param(RouteKind.PUBLIC, [PREMIUM], "POST", "/x", RouteKind.PUBLIC, id="no-any"),
    ],
)
def test_table_default(
    default: RouteKind, routes: list[Route], method: str, path: str, kind: RouteKind
) -> None:
    found = RouteTable(routes, default=default).match(method, path)
    assert found == RouteMatch(kind=kind, rule=None, route=None)


def test_table_default_is_deny() -> None:
    assert RouteTable([]).match("GET", "/").kind is RouteKind.DENY


def test_default_policy_values_map_to_kinds() -> None:
    assert RouteKind("deny") is RouteKind.DENY
    assert RouteKind("public") is RouteKind.PUBLIC


def test_table_case_insensitive() -> None:
    table = RouteTable([PREMIUM], default=RouteKind.PUBLIC, case_sensitive=False)
    assert table.match("GET", "/PREMIUM/A").route is PREMIUM
    assert table.match("GET", "/premium/a").route is PREMIUM


def test_table_non_ascii_pattern() -> None:
    route = Route("/bücher/**", None, RouteKind.PROTECTED, RULE)
    table = RouteTable([route])
    assert table.match("GET", normalise_path("/b%C3%BCcher/x")).route is route
    assert table.match("GET", normalise_path("/bücher")).route is route
    assert table.match("GET", normalise_path("/bucher")).route is None


def test_table_rejects_bad_pattern() -> None:
    with pytest.raises(ValueError, match="whole segment"):
        RouteTable([PREMIUM, Route("/a**", None, RouteKind.PUBLIC)])


def test_table_rejects_protected_default() -> None:
    with pytest.raises(ValueError, match="default policy"):
        RouteTable([], default=RouteKind.PROTECTED)


def test_table_many_routes_keeps_order() -> None:
    routes = [Route(f"/s{i}/**", GET_HEAD, RouteKind.PUBLIC) for i in range(200)]
    routes.append(Route("/**", GET_HEAD, RouteKind.PROTECTED, RULE))
    table = RouteTable(routes)
    assert table.match("GET", "/s150/x").route is routes[150]
    assert table.match("GET", "/s1500/x").route is routes[-1]
    assert repr(table) == "RouteTable(201 routes, default=DENY)"


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param(frozenset({"get", "Head"}), GET_HEAD, id="upper-cased"),
        pytest.param(frozenset({"*"}), None, id="star"),
        pytest.param(frozenset({"GET", "*"}), None, id="star-among-others"),
    ],
)
def test_route_methods(methods: frozenset[str] | None, expected: frozenset[str] | None) -> None:
    assert Route("/", methods, RouteKind.PUBLIC).methods == expected


@pytest.mark.parametrize(
    ("methods", "kind", "rule", "message"),
    [
        pytest.param(None, RouteKind.PROTECTED, None, "access rule", id="protected-no-rule"),
        pytest.param(None, RouteKind.PUBLIC, RULE, "access rule", id="public-with-rule"),
        pytest.param(None, RouteKind.DENY, RULE, "access rule", id="deny-with-rule"),
        pytest.param(frozenset(), RouteKind.PUBLIC, None, "not be empty", id="no-methods"),
    ],
)
def test_route_rejects(
    methods: frozenset[str] | None, kind: RouteKind, rule: AccessRule | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Route("/x", methods, kind, rule)
