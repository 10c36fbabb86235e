"""Gateway-made answers as aiohttp responses."""

from __future__ import annotations

from aiohttp import web

from gateway.http.replies import Reply, error_reply
from gateway.http.request import wants_json

__all__ = ["error_response", "reply_response"]

_ERROR_CODES = {
    413: "request_too_large",
    502: "bad_gateway",
    504: "gateway_timeout",
}


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    error = _ERROR_CODES.get(status, "upstream_error")
    return reply_response(
        error_reply(wants_json(request.headers.get("Accept", "")), status, error, message)
    )


def reply_response(reply: Reply) -> web.Response:
    """A gateway-made :class:`~gateway.http.replies.Reply` as an aiohttp response."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)
