"""Gateway-made answers as aiohttp responses, or as the bytes of a whole HTTP/1.1 response.

:func:`reply_bytes` is for answers made on arrival (:data:`gateway.web.protocol.ANSWER_NOW`):
the response aiohttp would send for :func:`reply_response` on a kept-alive HTTP/1.1
connection, header for header (the reply's, then ``Content-Length``, ``Date`` and ``Server``,
and ``Content-Type`` as aiohttp adds it for a body without one), without building it.
:func:`relayed_head` is the same for the head of an upstream's answer that proxy mode relays
on arrival: what aiohttp's ``StreamResponse`` writes for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from http import HTTPStatus

from aiohttp import web
from aiohttp.helpers import (
    must_be_empty_body,
    rfc822_formatted_time,
    should_remove_content_length,
)
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from gateway.http.replies import Reply, error_reply
from gateway.http.request import wants_json

__all__ = ["error_bytes", "error_response", "relayed_head", "reply_bytes", "reply_response"]

_ERROR_CODES = {
    413: "request_too_large",
    502: "bad_gateway",
    504: "gateway_timeout",
}


# What a visitor is told when the upstream fails them (proxy mode, WebSocket relays).
UPSTREAM_TIMED_OUT = "The upstream server did not answer in time."
UPSTREAM_UNREACHABLE = "The upstream server is not reachable."


def _error(accept: str, status: int, message: str) -> Reply:
    return error_reply(
        wants_json(accept), status, _ERROR_CODES.get(status, "upstream_error"), message
    )


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    """A proxy-mode error (413, 502, 504) for ``request``: a page, or JSON if it asks for it."""
    return reply_response(_error(request.headers.get("Accept", ""), status, message))


def error_bytes(accept: str, status: int, message: str) -> bytes:
    """:func:`error_response` as :func:`reply_bytes`, for a request that sent ``accept``."""
    return reply_bytes(_error(accept, status, message))


def reply_response(reply: Reply) -> web.Response:
    """A gateway-made :class:`~gateway.http.replies.Reply` as an aiohttp response."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)


_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus
}
_TRAILER = f"\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
# What aiohttp refuses in a header (it fails the response): a control character but tab (CR
# and LF too: _fields refuses them inside a name or value, the status line counts them).
_forbidden = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").search
_date = (-1, "")  # (second, Date header's value): one tuple, replaced whole


def _http_date() -> str:
    """The ``Date`` value of this second (aiohttp's own formatting, remembered per second)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, rfc822_formatted_time())
    return _date[1]


def _fields(pairs: Iterable[tuple[str, str]]) -> str:
    """Header lines, refused (ValueError) where aiohttp refuses to write them: a name or value
    with a control character but tab (CR and LF included)."""
    lines = []
    names = _PRINTABLE_NAMES
    for name, value in pairs:
        # A printable str holds no control character at all (nor a tab): the usual case, one
        # C scan of the value, and of a name only the first time. Only a part that is not (a
        # tab, some non-ASCII) is looked at closer.
        if not value.isprintable() and _refused(value):
            raise ValueError("a control character in a header")
        if name not in names:
            if not name.isprintable():
                if _refused(name):
                    raise ValueError("a control character in a header")
            elif len(names) < _MAX_NAMES:
                names.add(name)
        lines.append(f"{name}: {value}")
    return "\r\n".join(lines) + "\r\n" if lines else ""


# Header names found printable (the gateway's own, a few dozen): their check is a set lookup.
_PRINTABLE_NAMES: set[str] = set()
_MAX_NAMES = 256


def _refused(part: str) -> bool:
    """Whether aiohttp refuses ``part`` in a header name or value."""
    return _forbidden(part) is not None or "\r" in part or "\n" in part


def relayed_head(method: str, status: int, reason: str | None, headers: CIMultiDict[str]) -> bytes:
    """The head aiohttp's ``StreamResponse`` writes on a kept-alive HTTP/1.1 connection for an
    answer with ``headers`` (changed in place as aiohttp changes them): ``Content-Length``
    kept, or else ``Transfer-Encoding: chunked`` added (the body must then be sent chunked);
    for an answer that has no body (1xx, 204, 304) neither; ``Content-Type`` defaulted for a
    body that may not be empty, ``Date`` and ``Server`` added when missing. ValueError where
    aiohttp refuses: a control character (but tab) in the reason, a name or a value, a status
    outside 100-999. ``reason`` None: the status's standard phrase."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    length = headers.get("Content-Length")
    if must_be_empty_body(method, status):
        if length is not None and should_remove_content_length(method, status):
            del headers["Content-Length"]
        headers.popall("Transfer-Encoding", None)
    else:
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
        if length is None or int(length) != 0:
            headers.setdefault("Content-Type", "application/octet-stream")
    if "Date" not in headers:
        headers["Date"] = _http_date()
    headers.setdefault("Server", SERVER_SOFTWARE)
    if reason is None:  # aiohttp's own phrase, as for any status it knows
        known = _STATUS_LINES.get(status)
        line = known if known is not None else f"HTTP/1.1 {status} \r\n"
    else:
        line = f"HTTP/1.1 {status} {reason}\r\n"
    if _forbidden(line) or line.count("\n") != 1 or line.count("\r") != 1:
        raise ValueError("a control character in the status line")
    return f"{line}{_fields(headers.items())}\r\n".encode()


def reply_bytes(reply: Reply) -> bytes:
    """:func:`reply_response`'s response as aiohttp writes it to a kept-alive HTTP/1.1
    connection. ValueError for what aiohttp would refuse too: a control character (but tab)
    in a header name or value, a status outside 100-999."""
    status = reply.status
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status}")
        line = f"HTTP/1.1 {status} \r\n"
    body = reply.body
    fields = _fields(reply.headers)
    if body and reply.header("Content-Type") is None:
        fields += "Content-Type: application/octet-stream\r\n"
    head = f"{line}{fields}Content-Length: {len(body)}\r\nDate: {_http_date()}{_TRAILER}"
    return head.encode() + body if body else head.encode()
