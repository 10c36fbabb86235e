"""Per-view access rules for FastAPI apps behind :class:`gateway.asgi.PaywallMiddleware`.

::

    from gateway.fastapi import AccessRefused, access_refused_handler, require_access

    app = FastAPI(exception_handlers={AccessRefused: access_refused_handler})

    @app.get("/reports/{name}")
    async def report(name: str, paywall: Decision = Depends(require_access("premium"))): ...

    asgi = PaywallMiddleware(app, config="gateway.toml")

The path rules still apply first; a view's rule is checked on top of them, for the visitor the
middleware saw: the dependency finds the middleware's per-request
:class:`~gateway.asgi.ViewGate` in ``request.scope`` (not ``app.state``: it belongs to the
request, holds the credentials the middleware read — the app's own copy of the headers no
longer has them — and works the same in mounted sub-applications). Without the middleware
around the app the dependency fails closed (a RuntimeError, so a 500), never open.

A refused visitor gets exactly the middleware's answer (login redirect, 401, 403 or 503, HTML or
JSON, from :meth:`gateway.http.replies.Pages.deny`) by raising :class:`AccessRefused`; register
:func:`access_refused_handler` for it. Without the handler FastAPI still answers with the
reply's status and headers (Location, WWW-Authenticate, Cache-Control), its body then being
FastAPI's ``{"detail": …}``. HTTP routes only (a websocket route is guarded by the path rules).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import HTTPException, Request
from starlette.responses import Response

from gateway.asgi import VIEW_GATE, ViewGate
from gateway.core.policy import AccessRule
from gateway.http.replies import Reply
from gateway.http.steps import Decision

__all__ = ["AccessRefused", "Decision", "access_refused_handler", "require_access"]


class AccessRefused(HTTPException):
    """A per-view rule refused the visitor; ``reply`` is the gateway's answer for them."""

    def __init__(self, reply: Reply) -> None:
        content_type = reply.header("Content-Type") or ""
        detail: object = "access refused"
        if content_type.startswith("application/json"):
            detail = json.loads(reply.body)
        # Content-Type stays with the body it describes (the handler sends both).
        headers = {k: v for k, v in reply.headers if k.lower() != "content-type"}
        super().__init__(reply.status, detail=detail, headers=headers)
        self.reply = reply


async def access_refused_handler(request: Request, exc: Exception) -> Response:
    """The gateway's own reply for an :class:`AccessRefused`."""
    if not isinstance(exc, AccessRefused):
        raise exc
    reply = exc.reply
    response = Response(reply.body, status_code=reply.status)
    for name, value in reply.headers:
        response.headers.append(name, value)
    return response


def require_access(
    *access_rights: str, require: Literal["any", "all"] = "any"
) -> Callable[[Request], Awaitable[Decision]]:
    """A dependency requiring ``any`` (or ``all``) of ``access_rights`` for one view; it returns
    the :class:`~gateway.http.steps.Decision` (customer id, access, cache) or raises
    :class:`AccessRefused`."""
    rule = AccessRule(tuple(dict.fromkeys(access_rights)), require)

    async def paywall_access(request: Request) -> Decision:
        gate = request.scope.get(VIEW_GATE)
        if not isinstance(gate, ViewGate):
            raise RuntimeError("require_access needs gateway.asgi.PaywallMiddleware around the app")
        result = await gate.require(rule)
        if isinstance(result, Reply):
            raise AccessRefused(result)
        return result

    return paywall_access
