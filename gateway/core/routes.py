"""Route rules: which requests are public, which need access rights, which are refused.

A route is a path glob plus the methods it covers. Glob syntax, on normalised paths:

* ``*`` matches any run of characters within one segment (never ``/``);
* ``?`` matches one character within a segment: one ASCII character or one percent-encoded
  UTF-8 character (``/caf?`` matches ``/café``, which arrives as ``/caf%C3%A9``);
* ``**`` as a whole segment matches zero or more segments, so ``/premium/**`` matches
  ``/premium``, ``/premium/`` and ``/premium/a/b``, and ``/a/**/b`` matches ``/a/b`` and
  ``/a/x/y/b``; ``**`` inside a segment (``/a**b``) is a configuration error;
* everything else is literal. A pattern is normalised like a request path first, so ``/café``,
  ``/caf%c3%a9`` and ``/caf%C3%A9`` are the same pattern. A trailing slash is significant:
  ``/news`` does not match ``/news/``.

The first route in order that covers the method and matches the path wins; if none does, the
table's default applies. Case-insensitive tables fold ASCII letters only: non-ASCII characters
are percent-encoded bytes by then, so ``/É`` and ``/é`` stay different.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.paths import normalise_pattern
from gateway.core.policy import AccessRule
from gateway.errors import BadRequest

__all__ = ["Route", "RouteKind", "RouteMatch", "RouteTable", "compile_pattern"]


class RouteKind(enum.Enum):
    """What a route means. Values match ``access.default_policy`` in the configuration."""

    PUBLIC = "public"
    PROTECTED = "protected"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Route:
    """One rule: a path glob, the methods it covers (``None``: every method), what it means.

    Methods are upper-cased on construction, and a ``"*"`` among them means every method, so a
    configuration's method list can be passed as it is. ``rule`` is set iff ``kind`` is
    ``PROTECTED``.
    """

    pattern: str
    methods: frozenset[str] | None
    kind: RouteKind
    rule: AccessRule | None = None

    def __post_init__(self) -> None:
        if (self.kind is RouteKind.PROTECTED) != (self.rule is not None):
            raise ValueError(
                f"route {self.pattern!r}: an access rule is required for a protected route "
                "and not allowed otherwise"
            )
        if self.methods is not None:
            methods = frozenset(method.upper() for method in self.methods)
            if not methods:
                raise ValueError(f"route {self.pattern!r}: methods must not be empty")
            # Frozen dataclass: the canonical form is stored once, here.
            object.__setattr__(self, "methods", None if "*" in methods else methods)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The outcome of matching: the kind, its rule, and the route (``None``: the default)."""

    kind: RouteKind
    rule: AccessRule | None
    route: Route | None


# One character within a segment: an ASCII character, raw or escaped, or one UTF-8 encoded
# character (a lead byte and its continuation bytes; normalised paths are valid UTF-8).
_ONE_CHARACTER = r"(?:[^/%]|%[0-7][0-9A-F]|%[C-F][0-9A-F](?:%[89AB][0-9A-F])+)"
_ANY_SEGMENTS = r"(?:/.*)?"


def _pattern_source(pattern: str) -> str:
    """The regular expression (without flags or anchors) for one route pattern."""
    try:
        normalised = normalise_pattern(pattern)
    except BadRequest as exc:
        raise ValueError(f"route pattern {pattern!r} is not a valid path: {exc}") from None
    parts: list[str] = []
    previous_was_any = False
    for segment in normalised[1:].split("/"):
        if segment == "**":
            # "/**/**" is the same as "/**"; one group also avoids needless backtracking.
            if not previous_was_any:
                parts.append(_ANY_SEGMENTS)
            previous_was_any = True
            continue
        if "**" in segment:
            raise ValueError(
                f"route pattern {pattern!r}: '**' must be a whole segment, as in '/a/**/b'"
            )
        previous_was_any = False
        translated = "".join(
            "[^/]*" if char == "*" else _ONE_CHARACTER if char == "?" else re.escape(char)
            for char in segment
        )
        parts.append("/" + translated)
    return "".join(parts)


def _flags(case_sensitive: bool) -> re.RegexFlag:
    # re.ASCII keeps IGNORECASE to ASCII letters (no KELVIN SIGN matching "k").
    return re.ASCII if case_sensitive else re.ASCII | re.IGNORECASE


def compile_pattern(pattern: str, *, case_sensitive: bool = True) -> re.Pattern[str]:
    """Compile one route glob; use ``fullmatch`` on a normalised path.

    Raises ``ValueError`` with a message naming the pattern when it cannot be used.
    """
    return re.compile(_pattern_source(pattern), _flags(case_sensitive))


class RouteTable:
    """Ordered routes compiled for matching; build once at startup, match per request.

    Matching is one regular expression per method: the alternation of every route covering
    that method, in table order, each in a named group. The regex engine tries alternatives in
    order, so the group that matched is the first route that matches.
    """

    __slots__ = ("_any_method", "_by_method", "_default", "_matches", "routes")

    def __init__(
        self,
        routes: Sequence[Route],
        default: RouteKind = RouteKind.DENY,
        case_sensitive: bool = True,
    ) -> None:
        if default is RouteKind.PROTECTED:
            raise ValueError("the default policy must be 'deny' or 'public'")
        self.routes = tuple(routes)
        self._default = RouteMatch(kind=default, rule=None, route=None)
        self._matches = {
            f"r{index}": RouteMatch(kind=route.kind, rule=route.rule, route=route)
            for index, route in enumerate(self.routes)
        }
        sources = [_pattern_source(route.pattern) for route in self.routes]
        flags = _flags(case_sensitive)

        def combined(accepts: str | None) -> re.Pattern[str] | None:
            alternatives = [
                f"(?P<r{index}>{source})"
                for index, (route, source) in enumerate(zip(self.routes, sources, strict=True))
                if route.methods is None or accepts in route.methods
            ]
            return re.compile("|".join(alternatives), flags) if alternatives else None

        named = sorted({method for route in self.routes for method in route.methods or ()})
        self._by_method = {method: combined(method) for method in named}
        # Methods no route names explicitly: only the every-method routes apply.
        self._any_method = combined(None)

    def match(self, method: str, normalised_path: str) -> RouteMatch:
        """The first route covering ``method`` whose pattern matches, else the default.

        ``normalised_path`` must come from :func:`~gateway.core.paths.normalise_path`. The
        method is compared upper-cased, so a lower-case ``get`` cannot slip past a GET rule.
        """
        pattern = self._by_method.get(method.upper(), self._any_method)
        if pattern is not None:
            found = pattern.fullmatch(normalised_path)
            if found is not None:
                # Every alternative is one named group, so lastgroup is never None here.
                return self._matches[found.lastgroup]  # type: ignore[index]
        return self._default

    def __repr__(self) -> str:
        return f"RouteTable({len(self.routes)} routes, default={self._default.kind.name})"
