"""The content server behind proxy mode in the conformance table: the same behaviour as the
ASGI and WSGI test apps (tests/conformance/apps_asgi.py, apps_wsgi.py), as an aiohttp app.

Every path answers JSON ``{method, path, headers, decision}`` and appends it as one line to
``log`` (the decision, for proxy mode, is what the ``X-Paywall-*`` headers say). ``/stream``
streams five chunks 0.2 s apart; the websocket ``/ws`` sends the decision, echoes one message
and closes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

CACHE_CONTROL = "public, max-age=60, s-maxage=600"
CHUNKS = 5
CHUNK_INTERVAL = 0.2
LOG: web.AppKey[Path] = web.AppKey("log", Path)


def _received(request: web.Request) -> dict[str, Any]:
    headers = request.headers
    access = headers.get("X-Paywall-Access")
    decision = (
        None
        if access is None
        else {
            "customer_id": headers.get("X-Paywall-Customer-Id"),
            "access": access,
            "cache": headers.get("X-Paywall-Cache"),
        }
    )
    seen = {
        "method": request.method,
        "path": request.raw_path,
        "headers": {name.lower(): value for name, value in headers.items()},
        "decision": decision,
    }
    with request.app[LOG].open("a", encoding="utf-8") as log:
        log.write(json.dumps(seen) + "\n")
    return seen


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.path == "/ws" or request.path.startswith("/ws/"):
        return await _websocket(request)
    seen = _received(request)
    if request.path == "/stream":
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for index in range(CHUNKS):
            await response.write(f"chunk-{index}\n".encode())
            await asyncio.sleep(CHUNK_INTERVAL)
        await response.write_eof()
        return response
    return web.json_response(seen, headers={"Cache-Control": CACHE_CONTROL})


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    seen = _received(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json(seen["decision"])
    message = await ws.receive()
    if message.type is WSMsgType.TEXT:
        await ws.send_str(message.data)
    await ws.close()
    return ws


def content_app(log: Path) -> web.Application:
    app = web.Application()
    app[LOG] = log
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app
