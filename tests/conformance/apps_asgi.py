"""The ASGI apps of the front-end conformance table: a Starlette app and a FastAPI app, each
behind :class:`gateway.asgi.PaywallMiddleware`, served by uvicorn in the tests::

    PAYWALL_TEST_CONFIG=gateway.toml PAYWALL_TEST_APP_LOG=app.log \\
        uvicorn tests.conformance.apps_asgi:starlette_app --factory

Every path answers JSON ``{method, path, headers, decision}``: the raw path with its query, the
request headers (lower-cased names) and ``request.state.paywall`` (or null), and appends the
same object as one line to the file named by ``PAYWALL_TEST_APP_LOG``: what the app received,
for the tests to compare. Answers carry ``Cache-Control: public, max-age=60, s-maxage=600`` (a
content server that wants its pages in a CDN). ``/stream`` streams five chunks 0.2 s apart;
the websocket ``/ws`` sends the decision, echoes one message and closes. The FastAPI app also
has ``/fastapi/premium-view``, which requires ``premium`` through
:func:`gateway.fastapi.require_access`, on a route the path rules leave public.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.asgi import PaywallMiddleware
from gateway.fastapi import AccessRefused, Decision, access_refused_handler, require_access

CACHE_CONTROL = "public, max-age=60, s-maxage=600"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNKS = 5
CHUNK_INTERVAL = 0.2


def received(connection: HTTPConnection, **extra: Any) -> dict[str, Any]:
    """What the app received, logged as one JSON line."""
    scope = connection.scope
    path = scope["raw_path"].decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    decision = getattr(connection.state, "paywall", None)
    seen = {
        "method": scope.get("method", "WEBSOCKET"),
        "path": f"{path}?{query}" if query else path,
        "headers": {name.lower(): value for name, value in connection.headers.items()},
        "decision": dataclasses.asdict(decision) if decision is not None else None,
        **extra,
    }
    log_path = os.environ.get("PAYWALL_TEST_APP_LOG")
    if log_path:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(seen) + "\n")
    return seen


async def echo(request: Request) -> Response:
    return JSONResponse(received(request), headers={"Cache-Control": CACHE_CONTROL})


async def stream(request: Request) -> Response:
    received(request)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(CHUNKS):
            if i:
                await asyncio.sleep(CHUNK_INTERVAL)
            yield f"chunk-{i}\n".encode()

    return StreamingResponse(
        chunks(), media_type="text/plain", headers={"Cache-Control": CACHE_CONTROL}
    )


async def websocket(socket: WebSocket) -> None:
    seen = received(socket)
    await socket.accept()
    await socket.send_json(seen["decision"])
    await socket.send_text(await socket.receive_text())
    await socket.close()


def _config() -> str:
    return os.environ["PAYWALL_TEST_CONFIG"]


def starlette_app() -> PaywallMiddleware:
    """Starlette, wrapped: ``PaywallMiddleware(app, config=…)``."""
    app = Starlette(
        routes=[
            Route("/stream", stream),
            WebSocketRoute("/ws", websocket),
            Route("/{path:path}", echo, methods=METHODS),
        ]
    )
    return PaywallMiddleware(app, config=_config())


def fastapi_app() -> FastAPI:
    """FastAPI, with ``app.add_middleware(PaywallMiddleware, config=…)`` and a per-view rule."""
    app = FastAPI(exception_handlers={AccessRefused: access_refused_handler})

    @app.get("/fastapi/premium-view")
    async def premium_view(
        request: Request, paywall: Annotated[Decision, Depends(require_access("premium"))]
    ) -> Response:
        seen = received(request, view_decision=dataclasses.asdict(paywall))
        return JSONResponse(seen, headers={"Cache-Control": CACHE_CONTROL})

    app.add_api_route("/stream", stream, methods=["GET"])
    app.add_api_websocket_route("/ws", websocket)
    app.add_api_route("/{path:path}", echo, methods=METHODS)
    app.add_middleware(PaywallMiddleware, config=_config())
    return app
