"""How names in a request are compared, wherever the gateway looks for a credential or strips a
header: one rule per kind of name, used by every reader, stripper and redactor.

Two parsers reading the same bytes must never disagree in a way that grants. Servers and
frameworks differ in how they match names: nginx compares cookie names case-insensitively,
PHP percent-decodes them, CGI and WSGI turn ``_`` in header names into ``-`` (``HTTP_X_FOO``
for both ``X-Foo`` and ``X_Foo``), query parsers decode ``%54`` and ``+``. So a name is compared
in its *loosest* reading, and a spelling that matches loosely but not exactly is treated as the
name (and, for credentials, as ambiguous), never as something else.
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus

from multidict import istr

__all__ = ["cookie_name", "header_name", "param_name"]

# The header names a request's decision looks up, as multidict's case-insensitive keys: a
# CIMultiDict folds the case of a str key on every lookup, of an istr once (about 30 ns of the
# 60-90 a lookup costs). Equal to the str of the same spelling, so any other mapping reads
# them as it would that str.
AUTHORIZATION = istr("Authorization")
COOKIE = istr("Cookie")
HOST = istr("Host")
X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_HOST = istr("X-Forwarded-Host")
X_FORWARDED_METHOD = istr("X-Forwarded-Method")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_URI = istr("X-Forwarded-Uri")
X_ORIGINAL_METHOD = istr("X-Original-Method")
X_ORIGINAL_URI = istr("X-Original-URI")


def param_name(piece: str) -> str:
    """The name of one ``name=value`` query piece as compared: percent- and plus-decoded and
    case-folded, so every reader and stripper of a parameter agrees on its spellings."""
    name = piece.partition("=")[0]
    if "%" in name or "+" in name:
        name = unquote_plus(name)
    return name.casefold()


def cookie_name(pair: str) -> str:
    """The name of one ``name=value`` cookie pair as compared: surrounding whitespace removed,
    percent-decoded, case-folded (``PAYWALL_SESSION``, `` paywall_session ``,
    ``paywall%5Fsession`` are all ``paywall_session``)."""
    name = pair.partition("=")[0].strip()
    if "%" in name:
        name = unquote(name).strip()
    return name.casefold()


def header_name(name: str) -> str:
    """A header name as compared: lower case, ``_`` read as ``-`` (CGI / WSGI spelling)."""
    return name.lower().replace("_", "-")
