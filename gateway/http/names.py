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

__all__ = ["cookie_name", "header_name", "param_name"]


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
