"""Secrets out of log lines: :class:`Redactor` replaces tokens, session cookies and API
credentials with ``[redacted]`` wherever they appear in a string or a field value, under every
name the gateway itself would read a credential from, by the same name rules
(:mod:`gateway.http.names`: ``transfer%54oken=``, ``PAYWALL_SESSION=``,
``paywall_session="…"``). Used by both writers of log lines: :mod:`gateway.logs` and
:mod:`gateway.access_log`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from gateway.http.names import cookie_name, param_name

REDACTED = "[redacted]"
DEFAULT_SESSION_COOKIE = "paywall_session"
SECRET_QUERY_PARAMS = ("transferToken", "sessionToken", "customerSession", "token")
# Field keys compared after lower-casing and turning "-" into "_".
SECRET_FIELD_KEYS = frozenset(
    {
        "token",
        "session_token",
        "sessiontoken",
        "transfer_token",
        "transfertoken",
        "customer_session",
        "customersession",
        "cookie",
        "set_cookie",
        "authorization",
        "proxy_authorization",
        "x_plenigo_token",
        "x_plenigo_customer_session",
        "api_token",
    }
)

# A value ends at a separator of the surrounding syntax: query (& #), cookie (; ,), quotes,
# whitespace, closing brackets, or an encoded "&" (%26) inside an encoded URL.
_VALUE = re.compile(r"""(?:(?!%26)[^&#;,\s"'<>)}\]])*""")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# Header-style "Name: value" / "Name=value" (also spelled with "_", as CGI and WSGI read
# headers); an auth scheme word before the credential goes too.
_HEADERS = re.compile(
    r"(?i)(?<![A-Za-z0-9_-])((?:proxy[-_])?authorization|x[-_]plenigo[-_]token"
    r"|x[-_]plenigo[-_]customer[-_]session)"
    r"""(["']?\s*[:=]\s*["']?)(?!\[redacted\])(?:(?:basic|bearer|digest|token)\s+)?"""
    r"""[^\s"',;)}\]]+"""
)
# 'name': 'value' / "name": "value" (reprs of dicts, JSON bodies): the value of a secret name.
_MAPPING = re.compile(r"""(?P<head>(?P<q>["'])(?P<key>[^"'\n]{1,256})(?P=q)\s*:\s*["'])[^"']*""")
# name=value, the way a query or a Cookie header holds it, also percent-encoded inside another
# URL: "=" may be %3D (or %253D), and the name may be anything but a separator. Which names
# are secret is decided by the gateway's own name rules (gateway.http.names), not here. A name
# starts after a separator (or an encoded "="), so a long run of name characters is scanned
# once; it never runs across an encoded "=".
_NAME_CHAR = r"""[^\s&;?#=,"'<>(){}\[\]]"""
_EQUALS = r"(?:=|%(?:25){0,2}3[dD])"
_ASSIGN = re.compile(
    rf"(?:(?<!{_NAME_CHAR})|(?<=%3[dD])|(?<=%253[dD]))"
    rf"(?P<name>(?:(?!{_EQUALS}){_NAME_CHAR})+)"
    rf"""\s*{_EQUALS}\s*["']?"""
)
# Where, in a name run, the name of the last query piece or cookie pair starts ("/a?x&name",
# "https://h/p?name" once an encoded URL is decoded, "\r\nname" in the repr of bytes).
_NAME_START = re.compile(r"[?&;/\s:,]|\\(?:[rnt]|x[0-9a-fA-F]{2})")
# An encoded URL inside a query holds its names encoded once more: decoded this many times.
_DECODINGS = 3
# The callback endpoint's path holds its secret: whatever follows it goes.
_CALLBACK_PATH = re.compile(r"(?i)(/_paywall/+callbacks/+)(?!\[redacted\])[^\s?#\"'<>&,;)}\]]+")
# Every default rule's name contains one of these (case-folded): a string without any, and
# without a percent-escape next to an "=", skips the regexes.
_NEEDLES = frozenset({"token", "session", "cookie", "authorization", "bearer"})
# Names seen are remembered (field keys, parameter names: a small set), short ones only.
_NAME_CACHE_SIZE = 4096
_NAME_CACHE_MAX_LENGTH = 64


def _last_name(run: str) -> str:
    return _NAME_START.split(run)[-1]


class Redactor:
    """Replaces secrets in strings and in structured field values. Patterns compile once.

    A name is secret when the gateway would read it as a credential: a query parameter whose
    :func:`~gateway.http.names.param_name` (percent- and plus-decoded, case-folded) or a cookie
    whose :func:`~gateway.http.names.cookie_name` (spaces stripped, percent-decoded,
    case-folded) is the session cookie or one of the secret parameters — so
    ``transfer%54oken=``, ``TRANSFERTOKEN=``, ``paywall_session="…"``, ``paywall_session =…``,
    ``paywall%5Fsession=`` all lose their values.
    """

    def __init__(
        self,
        *,
        secret_cookie: str | None = None,
        secret_params: Iterable[str] = (),
    ) -> None:
        cookies = {DEFAULT_SESSION_COOKIE}
        if secret_cookie:
            cookies.add(secret_cookie)
        params = {*SECRET_QUERY_PARAMS, *(p for p in secret_params if p)}
        self._names = frozenset(name.casefold() for name in params | cookies)
        self._secret_keys = SECRET_FIELD_KEYS | {
            name.lower().replace("-", "_") for name in params | cookies
        }
        self._needles = tuple(
            _NEEDLES
            | {name for name in self._names if not any(needle in name for needle in _NEEDLES)}
        )
        self._name_cache: dict[str, bool] = {}

    def needs_scan(self, value: str) -> bool:
        """Whether ``value`` may hold a secret at all: a secret name in any case (case-folded,
        as the gateway's name rules fold them: the long s and the Kelvin sign become "s" and
        "k"), or a percent-escape, which may spell any name, next to an "=" or an encoded one.
        The access log's lines go through this on every request: it stays cheap."""
        folded = value.lower() if value.isascii() else value.casefold()
        for needle in self._needles:
            if needle in folded:
                return True
        return "%" in value and ("=" in value or "3d" in folded)

    def text(self, value: str) -> str:
        """``value`` with every secret it carries replaced by ``[redacted]``."""
        if "callbacks/" in value.lower():
            value = _CALLBACK_PATH.sub(r"\1" + REDACTED, value)
        if not self.needs_scan(value):
            return value
        if "=" in value or "%" in value:
            value = self._assignments(value)
        if ":" in value or "=" in value:
            value = _MAPPING.sub(self._mapping_value, value)
            value = _HEADERS.sub(r"\1\2" + REDACTED, value)
        return _BEARER.sub(r"\1 " + REDACTED, value)

    def is_secret_key(self, key: str) -> bool:
        """Whether a field key (or a mapping's key) names a secret."""
        return self.is_secret_name(key)

    def is_secret_name(self, run: str) -> bool:
        """Whether the name ending ``run`` (a query parameter or cookie name, possibly inside
        an encoded URL, or a header or field name) names a secret: one the gateway reads a
        credential from, or one of the secret field keys."""
        known = self._name_cache.get(run)
        if known is not None:
            return known
        secret = False
        text = run
        for _ in range(_DECODINGS):
            last = _last_name(text)
            if (
                param_name(last) in self._names
                or cookie_name(last) in self._names
                or last.lower().replace("-", "_") in self._secret_keys
            ):
                secret = True
                break
            decoded = unquote(text)
            if decoded == text:
                break
            text = decoded
        if len(run) <= _NAME_CACHE_MAX_LENGTH:
            if len(self._name_cache) >= _NAME_CACHE_SIZE:
                self._name_cache.clear()
            self._name_cache[run] = secret
        return secret

    def _assignments(self, value: str) -> str:
        out: list[str] = []
        done = 0  # value[:done] is in out
        for match in _ASSIGN.finditer(value):
            start = match.end()
            if start <= done or not self.is_secret_name(match["name"]):
                continue
            end = _VALUE.match(value, start)
            if end is None or end.end() == start:
                continue
            out.append(value[done:start])
            out.append(REDACTED)
            done = end.end()
        if not out:
            return value
        out.append(value[done:])
        return "".join(out)

    def _mapping_value(self, match: re.Match[str]) -> str:
        if self.is_secret_key(match["key"]):
            return match["head"] + REDACTED
        return match[0]

    def value(self, value: Any) -> Any:
        """A JSON-ready copy of a field value, redacted. Scalars other than strings pass as-is."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if self.is_secret_key(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(str(value))
