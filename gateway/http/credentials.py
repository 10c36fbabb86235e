"""Reading credentials from a request: which bytes are the visitor's session or transfer token.

Precedence as DESIGN.md fixes it: the transfer token in the query, then the session cookie, the
``X-plenigo-customer-session`` header and ``Authorization: Bearer``. The rule everywhere: a
credential the gateway could read two ways is a :class:`~gateway.errors.BadRequest`, never a
guess. A front proxy's cache key (nginx's ``$cookie_…`` takes the first cookie of a name, in any
case, split at commas), a framework behind the gateway (PHP percent-decodes cookie names, WSGI
reads ``X_Foo`` as ``X-Foo``) or a browser may each pick another of two candidates, and whoever
picks differently from the gateway gets a decision meant for someone else. So names are compared
in their loosest reading (:mod:`gateway.http.names`) and any repetition or respelling is refused.

Values must be visible ASCII (cookies: RFC 6265 cookie-octets), at most 4096 characters.
Framework-neutral: headers are any :class:`multidict.MultiMapping` with case-insensitive keys.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from multidict import MultiMapping, istr

from gateway.core.tokens import MAX_TOKEN_LENGTH, cookie_value, visible_token
from gateway.errors import BadRequest
from gateway.http.names import AUTHORIZATION, COOKIE, cookie_name, header_name, param_name

__all__ = [
    "MAX_TOKEN_LENGTH",
    "SESSION_HEADER",
    "bearer_token",
    "cookie_value",
    "query_values",
    "session_cookie",
    "session_token",
    "strip_session_cookie",
    "transfer_token",
]

SESSION_HEADER = "X-plenigo-customer-session"
_SESSION_HEADER = istr(SESSION_HEADER)  # (the lookup key: gateway.http.names)

Headers = MultiMapping[str]


def query_values(query: str, name: str) -> list[str]:
    """Every value of ``name`` in a raw query, decoded; names compare case-insensitively (as
    :func:`strip_query_param` removes them) so no spelling slips past one and into the other."""
    if not query:
        return []
    wanted = name.casefold()
    values = []
    for part in query.split("&"):
        for piece in part.split(";"):
            if param_name(piece) == wanted:
                values.append(unquote_plus(piece.partition("=")[2]))
    return values


def transfer_token(query: str, param: str) -> str | None:
    """The transfer token in ``query``; BadRequest when the parameter comes more than once (in
    any spelling, empty or not: query parsers keep the first, the last or a list) or the token
    is malformed. An empty value alone is no token."""
    values = query_values(query, param)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{param} given more than once")
    if not values[0]:
        return None
    if not visible_token(values[0]):
        raise BadRequest(f"malformed {param}")
    return values[0]


# The headers a session token is read from, as header_name() spells them.
_CREDENTIAL_HEADERS = frozenset({"cookie", "authorization", SESSION_HEADER.lower()})


def session_token(headers: Headers, session_cookie_name: str) -> str | None:
    """The session token by precedence: cookie, X-plenigo-customer-session, Bearer.

    Every source is checked for ambiguity first, whichever one wins: a front proxy (nginx's
    cache key, a framework behind the gateway) may read the same bytes differently, so a
    credential the gateway could read two ways is a BadRequest, never a guess. That is: a
    credential header spelled with ``_`` (CGI and WSGI read it as the ``-`` name), the
    session header or ``Authorization`` given more than once, and the session cookie named more
    than once or in another spelling (see :func:`session_cookie`).
    """
    for name in headers:
        if "_" in name and header_name(name) in _CREDENTIAL_HEADERS:
            raise BadRequest("a credential header spelled with '_'")
    cookie = session_cookie(headers, session_cookie_name)
    header_values = headers.getall(_SESSION_HEADER, ())
    if len(header_values) > 1:
        raise BadRequest(f"{SESSION_HEADER} given more than once")
    authorizations = headers.getall(AUTHORIZATION, ())
    if len(authorizations) > 1:
        raise BadRequest("Authorization given more than once")
    if cookie is not None:
        return cookie
    if header_values:
        value = header_values[0].strip()
        if value:
            if not visible_token(value):
                raise BadRequest(f"malformed {SESSION_HEADER} header")
            return value
    if authorizations:
        token = bearer_token(authorizations[0])
        if token is not None:
            if not visible_token(token):
                raise BadRequest("malformed Authorization: Bearer header")
            return token
    return None


def bearer_token(authorization: str) -> str | None:
    """The credential of an ``Authorization`` value if its scheme is Bearer (any case, any
    whitespace after it), else None. It may be empty or malformed: the caller checks."""
    parts = authorization.split(None, 1)
    if not parts or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() if len(parts) > 1 else ""


def session_cookie(headers: Headers, name: str) -> str | None:
    """The session cookie's value, None when there is none (or it is empty: a cleared cookie).

    Names are compared as :func:`~gateway.http.names.cookie_name` reads them (case, spaces,
    percent-escapes), across every Cookie line, and also after a ``,`` (nginx splits cookies on
    commas). The name found more than once, empty or not, or in any spelling but the exact one,
    is a BadRequest: nginx, PHP, Django and the gateway would each pick a different one.
    """
    wanted = name.casefold()
    found: str | None = None
    seen = False
    for header in headers.getall(COOKIE, ()):
        if wanted not in header.lower() and "%" not in header and header.isascii():
            continue  # the fast path: no spelling of the name can be in this line
        for pair in header.split(";"):
            if wanted not in pair.lower() and "%" not in pair and pair.isascii():
                continue  # not this pair either (the same test, per pair)
            pieces = pair.split(",")
            if len(pieces) > 1 and any(cookie_name(piece) == wanted for piece in pieces):
                raise BadRequest(f"{name} cookie beside a comma")
            if cookie_name(pair) != wanted:
                continue
            if seen:
                raise BadRequest(f"{name} cookie given more than once")
            seen = True
            key, _, value = pair.partition("=")
            if key.strip() != name:
                raise BadRequest(f"{name} cookie in another spelling")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value:
                continue  # "name" or "name=": a cleared cookie
            if not cookie_value(value):
                raise BadRequest(f"malformed {name} cookie")
            found = value
    return found


def strip_session_cookie(cookie_header: str, name: str) -> str:
    """``cookie_header`` without any pair that names the session cookie in any spelling."""
    wanted = name.casefold()
    kept = [
        pair.strip()
        for pair in cookie_header.split(";")
        if pair.strip() and cookie_name(pair) != wanted
    ]
    return "; ".join(kept)
