"""Forwarding a visitor's request to the upstream server: the mechanics, not the decision.

:class:`UpstreamProxy` takes a request the gateway already decided to let through, plus the
``X-Paywall-*`` headers that carry the decision, and relays it: bodies are streamed both ways
with bounded memory, hop-by-hop headers are dropped both ways, client-supplied ``X-Paywall-*``
and (from untrusted peers) ``X-Forwarded-*`` headers never reach the upstream, and the visitor's
session credentials stay at the gateway unless configured otherwise. WebSocket upgrades are
proxied frame by frame.

The upstream session must not decompress (the visitor gets the upstream's bytes, with their
``Content-Encoding``), must not keep cookies (it serves every visitor) and must not follow
redirects (they are the visitor's to follow). :func:`create_upstream_session` builds one like
that; :func:`upstream_proxy_context` does it inside ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.http.credentials import SESSION_HEADER
from gateway.http.forward import (
    HOP_BY_HOP_HEADERS,
    add_forwarded,
    connection_tokens,
    forward_headers,
    private_cache_control,
    strip_query_param,
)
from gateway.http.forwarded import TrustedProxies
from gateway.http.replies import Reply, error_reply
from gateway.http.request import wants_json

__all__ = [
    "UPSTREAM_PROXY",
    "ProxyOptions",
    "UpstreamProxy",
    "create_upstream_session",
    "reply_response",
    "upstream_proxy_context",
]

log = logging.getLogger(__name__)

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
# Without these, aiohttp's client would invent headers the visitor never sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_WS_CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProxyOptions:
    """How to reach the upstream and what to hand it.

    ``upstream`` may carry a base path (``http://127.0.0.1:8000/site``): forwarded paths are
    appended to it. ``read_timeout`` bounds the wait for the upstream's response headers and
    every later stall in its body; ``connect_timeout`` bounds opening the connection.
    """

    upstream: URL
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    max_request_body: int | None = None
    forward_session_token: bool = False
    session_cookie: str = "paywall_session"
    session_header: str = SESSION_HEADER
    transfer_token_param: str = "transferToken"  # noqa: S105 (a parameter name, not a secret)

    def __post_init__(self) -> None:
        if not self.upstream.absolute or self.upstream.scheme not in ("http", "https"):
            raise ValueError(f"upstream must be an absolute http(s) URL, not {self.upstream}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("upstream timeouts must be positive")
        if self.max_request_body is not None and self.max_request_body < 0:
            raise ValueError("max_request_body must not be negative")

    @property
    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_read=self.read_timeout
        )


def create_upstream_session(options: ProxyOptions) -> aiohttp.ClientSession:
    """A client session fit for :class:`UpstreamProxy`; call it inside the running loop.

    No decompression (bytes pass through with their ``Content-Encoding``), no cookie jar (the
    session is shared by every visitor), no proxy settings from the environment, and a
    connection pool large enough for a busy site but not unbounded.
    """
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30.0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=options.client_timeout,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        trust_env=False,
    )


def _is_websocket_upgrade(request: web.Request) -> bool:
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


class _BodyTooLarge(Exception):
    pass


class UpstreamProxy:
    """Relays allowed requests to the upstream; one per gateway, shared by every request.

    The ``session`` must be built like :func:`create_upstream_session` does (above all
    ``auto_decompress=False`` and no cookie jar); the proxy does not close it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: ProxyOptions,
        trusted: TrustedProxies,
    ) -> None:
        self._session = session
        self._options = options
        self._trusted = trusted
        self._base_path = options.upstream.raw_path.rstrip("/")

    @property
    def options(self) -> ProxyOptions:
        return self._options

    async def forward(
        self,
        request: web.Request,
        path: str,
        paywall_headers: Mapping[str, str],
        *,
        private: bool = False,
    ) -> web.StreamResponse:
        """Relay ``request`` to the upstream at ``path`` and relay the answer back.

        ``path`` is the normalised, percent-encoded path the access decision was made for; it
        is forwarded exactly as given. The query string is the visitor's, minus the transfer
        token. ``paywall_headers`` are added after every client-supplied ``X-Paywall-*`` header
        has been removed. Upstream unreachable is a 502, upstream too slow to answer a 504; an
        upstream that fails after its headers were relayed aborts the visitor's connection.
        ``private``: the answer was granted to this visitor only (paid content), so no shared
        cache in front of the gateway may store it (:func:`private_cache_control`).
        """
        url = self.upstream_url(path, request.raw_path)
        headers = self.request_headers(request, paywall_headers)
        if _is_websocket_upgrade(request):
            return await self._forward_websocket(request, url, headers)

        limit = self._options.max_request_body
        if limit is not None and (request.content_length or 0) > limit:
            return _error_response(request, 413, "The request body is too large.")

        body_state: list[bool] = [False]  # set when the body outgrows max_request_body
        body = self._stream_body(request, body_state) if request.body_exists else None
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=self._options.client_timeout,
            )
        except TimeoutError:
            log.warning("upstream timed out: %s %s", request.method, path)
            return _error_response(request, 504, "The upstream server did not answer in time.")
        except (aiohttp.ClientError, OSError) as exc:
            if body_state[0]:
                return _error_response(request, 413, "The request body is too large.")
            log.warning("upstream unreachable: %s %s: %r", request.method, path, exc)
            return _error_response(request, 502, "The upstream server is not reachable.")

        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=self.response_headers(upstream.headers, private=private),
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if isinstance(exc, ConnectionResetError) and _client_gone(request):
                    raise  # the visitor left; aiohttp's server deals with that
                log.warning("upstream failed mid-response: %s %s: %r", request.method, path, exc)
                _abort(request)
                return response
            await response.write_eof()
        return response

    def upstream_url(self, path: str, raw_path: str) -> URL:
        """The upstream URL for ``path`` with the query of ``raw_path`` minus the transfer token."""
        query = strip_query_param(raw_path.partition("?")[2], self._options.transfer_token_param)
        upstream = self._options.upstream
        return URL.build(
            scheme=upstream.scheme,
            authority=upstream.raw_authority,
            path=self._base_path + path,
            query_string=query,
            encoded=True,
        )

    def request_headers(
        self, request: web.Request, paywall_headers: Mapping[str, str]
    ) -> CIMultiDict[str]:
        """The headers the upstream gets for ``request`` (:mod:`gateway.http.forward`)."""
        incoming = request.headers
        peer_trusted = self._trusted.is_trusted(request.remote)
        options = self._options
        headers = forward_headers(
            incoming.items(),
            {},
            peer_trusted=peer_trusted,
            session_cookie=options.session_cookie,
            session_header=options.session_header,
            transfer_param=options.transfer_token_param,
            forward_session_token=options.forward_session_token,
            proxy=True,
        )
        add_forwarded(
            headers, incoming, peer=request.remote, scheme=request.scheme, peer_trusted=peer_trusted
        )
        for name, value in paywall_headers.items():
            headers[name] = value
        return headers

    def response_headers(
        self, upstream_headers: CIMultiDictProxy[str], *, private: bool = False
    ) -> CIMultiDict[str]:
        """The upstream's response headers minus hop-by-hop ones; with ``private``, its
        Cache-Control made private."""
        dropped = HOP_BY_HOP_HEADERS | connection_tokens(upstream_headers.getall("Connection", ()))
        if private:
            dropped = dropped | {"cache-control"}
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream_headers.items():
            if name.lower() not in dropped:
                headers.add(name, value)
        if private:
            headers["Cache-Control"] = private_cache_control(
                upstream_headers.getall("Cache-Control", [])
            )
        return headers

    async def _stream_body(
        self, request: web.Request, too_large: list[bool]
    ) -> AsyncIterator[bytes]:
        """The visitor's body as it arrives; aiohttp's flow control keeps the buffer small."""
        limit = self._options.max_request_body
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
            if limit is not None and received > limit:
                too_large[0] = True
                raise _BodyTooLarge
            yield chunk

    async def _forward_websocket(
        self, request: web.Request, url: URL, headers: CIMultiDict[str]
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
            upstream_ws = await self._session.ws_connect(
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
            return _error_response(
                request, status, "The upstream server refused the WebSocket connection."
            )
        except TimeoutError:
            return _error_response(request, 504, "The upstream server did not answer in time.")
        except (aiohttp.ClientError, OSError):
            return _error_response(request, 502, "The upstream server is not reachable.")

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


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    """Cut the visitor's connection: a truncated body must not look complete."""
    transport = request.transport
    if transport is not None:
        transport.abort()


_ERROR_CODES = {
    413: "request_too_large",
    502: "bad_gateway",
    504: "gateway_timeout",
}


def _error_response(request: web.Request, status: int, message: str) -> web.Response:
    error = _ERROR_CODES.get(status, "upstream_error")
    return reply_response(
        error_reply(wants_json(request.headers.get("Accept", "")), status, error, message)
    )


def reply_response(reply: Reply) -> web.Response:
    """A gateway-made :class:`~gateway.http.replies.Reply` as an aiohttp response."""
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)


UPSTREAM_PROXY: web.AppKey[UpstreamProxy] = web.AppKey("upstream_proxy", UpstreamProxy)


def upstream_proxy_context(
    options: ProxyOptions, trusted: TrustedProxies
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that puts an :class:`UpstreamProxy` at ``app[UPSTREAM_PROXY]``
    and closes its session on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        session = create_upstream_session(options)
        try:
            app[UPSTREAM_PROXY] = UpstreamProxy(session, options, trusted)
            yield
        finally:
            await session.close()

    return context
