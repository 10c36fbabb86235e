"""The request as every driver hands it to the front-end policy, and what is read from it.

A driver (the aiohttp server, the ASGI or the WSGI middleware) turns its framework's request
into a :class:`RequestView`: the method, the raw request target as received (never a
framework's decoded path: two readings of one path is how a public rule ends up matching a
premium page), the headers, the peer address and the scheme the connection used.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from gateway.core.paths import normalise_path
from gateway.errors import BadRequest
from gateway.http.credentials import Headers

__all__ = [
    "RequestView",
    "Visitor",
    "split_target",
    "valid_host",
    "valid_method",
    "wants_json",
]

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
    r"[A-Za-z0-9])?\.?(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?"
).fullmatch
_METHOD = re.compile(r"[A-Za-z]{1,20}").fullmatch


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class RequestView:
    """One request as received. ``target`` is the raw request target (``/path?query``, still
    percent-encoded); ``peer`` the connection's remote address (None for a Unix socket);
    ``scheme`` the connection's own, ``http`` or ``https``."""

    method: str
    target: str
    headers: Headers
    peer: str | None
    scheme: str

    def __init__(
        self, method: str, target: str, headers: Headers, peer: str | None, scheme: str
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.peer = peer
        self.scheme = scheme


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Visitor:
    """The request as the visitor made it: behind nginx, the original one, not the subrequest.

    ``path`` is normalised; ``query`` is raw (still percent-encoded, may hold the transfer
    token); ``host`` is None when it is missing or not a valid host.
    """

    method: str
    path: str
    query: str
    scheme: str
    host: str | None
    headers: Headers

    def __init__(
        self, method: str, path: str, query: str, scheme: str, host: str | None, headers: Headers
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.scheme = scheme
        self.host = host
        self.headers = headers

    @property
    def wants_json(self) -> bool:
        return wants_json(self.headers.get("Accept", ""))


def wants_json(accept: str) -> bool:
    """Whether an ``Accept`` header asks for JSON rather than a page."""
    accept = accept.lower()
    return "application/json" in accept and "text/html" not in accept


def split_target(target: str, *, path_parameters: bool = False) -> tuple[str, str]:
    """A request target (``/path?query``) as (normalised path, raw query); BadRequest if the
    path is ambiguous (``;`` included, unless ``path_parameters``) or not in origin form."""
    raw_path, _, query = target.partition("?")
    query = query.partition("#")[0]
    if len(raw_path) <= _REMEMBERED_PATH_LENGTH:
        return _remembered_path(raw_path, path_parameters), query
    return normalise_path(raw_path, path_parameters=path_parameters), query


# The paths of a site repeat: each is normalised once (a BadRequest is not remembered). Short
# ones only, so the memo's size stays bounded in bytes too; paths are no credentials.
_REMEMBERED_PATH_LENGTH = 512


@functools.lru_cache(maxsize=4096)
def _remembered_path(raw_path: str, path_parameters: bool) -> str:
    return normalise_path(raw_path, path_parameters=path_parameters)


def valid_host(value: str | None) -> str | None:
    """``value`` lower-cased if it is a host[:port], else None."""
    if not value:
        return None
    if len(value) <= _REMEMBERED_HOST_LENGTH:
        return _remembered_host(value)
    return _checked_host(value)


_REMEMBERED_HOST_LENGTH = 270  # a DNS name (253), a port, brackets


def _checked_host(value: str) -> str | None:
    return value.lower() if _HOST(value) else None


@functools.lru_cache(maxsize=1024)
def _remembered_host(value: str) -> str | None:
    return _checked_host(value)


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def valid_method(value: str) -> str:
    if value in _KNOWN_METHODS:
        return value
    if not _METHOD(value):
        raise BadRequest("malformed request method")
    return value.upper()
