"""What a credential or an identifier may look like wherever the gateway passes it on: into a
header, a cookie, a cache key or a log line. One rule each, shared by the code that reads them
from visitors (:mod:`gateway.http.credentials`) and the code that reads them from a platform
(:mod:`gateway.platform.models`), so no value either accepts can break the other's output."""

from __future__ import annotations

import re

__all__ = ["MAX_TOKEN_LENGTH", "cookie_value", "visible_token"]

MAX_TOKEN_LENGTH = 4096

# RFC 6265 cookie-octet: visible ASCII without space, '"', ',', ';' and '\'.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,4096}").fullmatch


def cookie_value(value: str) -> bool:
    """Whether ``value`` may be a cookie value as it is: 1 to 4096 RFC 6265 cookie-octets."""
    return _COOKIE_VALUE(value) is not None


def visible_token(value: str) -> bool:
    """Whether ``value`` is 1 to 4096 visible ASCII characters (a token in a header or query:
    no whitespace, no control characters, nothing outside ASCII)."""
    # Printable ASCII is 0x20-0x7e: without the space, exactly the visible characters. (Three
    # C checks, isascii without a scan: cheaper than a regular expression's match, and a
    # session token is checked on every request.)
    return (
        0 < len(value) <= MAX_TOKEN_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )
