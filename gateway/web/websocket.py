"""The WebSocket relay of proxy mode: the handshake redone towards the upstream, then frames
copied both ways until one side closes, whose close code and reason the other side gets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway.http.forward import connection_tokens
from gateway.web.responses import UPSTREAM_TIMED_OUT, UPSTREAM_UNREACHABLE, error_response

__all__ = ["is_websocket_upgrade", "relay_websocket"]

# The WebSocket handshake is redone by the client side of the proxy.
_WEBSOCKET_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
_WS_CLOSE_TIMEOUT = 10.0


def is_websocket_upgrade(request: web.Request) -> bool:
    headers = request.headers
    return (
        request.method == "GET"
        and headers.get("Upgrade", "").strip().lower() == "websocket"
        and "upgrade" in connection_tokens(headers.getall("Connection", ()))
    )


def _close_code(code: object) -> int:
    """A close code we may send on: the peer's own, or 1000 for ones that must not be sent."""
    if isinstance(code, int) and (
        code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999
    ):
        return code
    return aiohttp.WSCloseCode.OK


async def relay_websocket(
    session: aiohttp.ClientSession,
    request: web.Request,
    url: URL,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    offered = [
        protocol.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for protocol in value.split(",")
        if protocol.strip()
    ]
    for name in _WEBSOCKET_HANDSHAKE_HEADERS:
        headers.popall(name, None)
    try:
        upstream_ws = await session.ws_connect(
            url,
            protocols=offered,
            headers=headers,
            autoclose=False,
            autoping=True,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_TIMEOUT),
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        return error_response(
            request, status, "The upstream server refused the WebSocket connection."
        )
    except TimeoutError:
        return error_response(request, 504, UPSTREAM_TIMED_OUT)
    except (aiohttp.ClientError, OSError):
        return error_response(request, 502, UPSTREAM_UNREACHABLE)

    async with upstream_ws:
        client_ws = web.WebSocketResponse(
            protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
            autoclose=False,
            autoping=True,
            timeout=_WS_CLOSE_TIMEOUT,
        )
        await client_ws.prepare(request)
        to_upstream = asyncio.create_task(_pump(client_ws.receive, upstream_ws))
        to_client = asyncio.create_task(_pump(upstream_ws.receive, client_ws))
        try:
            done, _ = await asyncio.wait(
                (to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        first = to_upstream if to_upstream in done else to_client
        if first.cancelled() or first.exception() is not None:
            code, message = int(aiohttp.WSCloseCode.INTERNAL_ERROR), b""
        else:
            code, message = first.result()
        # Tell the side that did not close first, then answer the side that did.
        if first is to_upstream:
            await upstream_ws.close(code=code, message=message)
            await client_ws.close(code=code, message=message)
        else:
            await client_ws.close(code=code, message=message)
            await upstream_ws.close(code=code, message=message)
    return client_ws


async def _pump(
    receive: Callable[[], Awaitable[aiohttp.WSMessage]],
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int, bytes]:
    """Copy messages until the source closes; the close code and reason to pass on."""
    while True:
        message = await receive()
        try:
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type is WSMsgType.CLOSE:
                reason = message.extra.encode() if isinstance(message.extra, str) else b""
                return _close_code(message.data), reason
            elif message.type is WSMsgType.ERROR:
                return aiohttp.WSCloseCode.INTERNAL_ERROR, b""
            elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                return aiohttp.WSCloseCode.GOING_AWAY, b""
        except (ConnectionError, aiohttp.ClientError):
            return aiohttp.WSCloseCode.GOING_AWAY, b""
