"""Forwarding a visitor's request to the upstream server: the mechanics, not the decision.

:class:`UpstreamProxy` takes a request the gateway already decided to let through, plus the
``X-Paywall-*`` headers that carry the decision, and relays it: bodies are streamed both ways
with bounded memory (an answer of at most :data:`WHOLE_BODY` bytes with a Content-Length is
read whole and sent in one write), hop-by-hop headers are dropped both ways, client-supplied
``X-Paywall-*`` and (from untrusted peers) ``X-Forwarded-*`` headers never reach the upstream,
and the visitor's session credentials stay at the gateway unless configured otherwise.
WebSocket upgrades are proxied frame by frame.

Two ways in, one behaviour: :meth:`UpstreamProxy.forward` relays an aiohttp request;
:meth:`UpstreamProxy.relay` a request answered on arrival (:mod:`gateway.web.protocol`: a page
without a body, decided from memory), as the bytes aiohttp would have sent for it
(:func:`~gateway.web.responses.relayed_head`), or a :class:`~gateway.web.protocol.Streamed`
answer for a body that is not read whole.

The upstream session must not decompress (the visitor gets the upstream's bytes, with their
``Content-Encoding``), must not keep cookies (it serves every visitor) and must not follow
redirects (they are the visitor's to follow). :func:`create_upstream_session` builds one like
that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.http.credentials import SESSION_HEADER, Headers
from gateway.http.forward import (
    HOP_BY_HOP_HEADERS,
    add_forwarded,
    connection_tokens,
    forward_headers,
    private_cache_control,
    strip_query_param,
)
from gateway.http.forwarded import TrustedProxies
from gateway.http.request import RequestView
from gateway.web.bodies import limited_body
from gateway.web.protocol import Broken, Streamed
from gateway.web.responses import (
    UPSTREAM_TIMED_OUT,
    UPSTREAM_UNREACHABLE,
    error_bytes,
    error_response,
    relayed_head,
)
from gateway.web.websocket import is_websocket_upgrade, relay_websocket

__all__ = [
    "UPSTREAM_PROXY",
    "ProxyOptions",
    "UpstreamProxy",
    "create_upstream_session",
]

log = logging.getLogger(__name__)

# Without these, aiohttp's client would invent headers the visitor never sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


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


WHOLE_BODY = 64 * 1024
"""Upstream answers with a Content-Length up to this many bytes are read whole and relayed in
one write; longer ones, and those without a length, are streamed as they come."""


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
        self._timeout = options.client_timeout  # built once: every request passes it
        # Passed with every request only if the session does not skip them already (aiohttp
        # builds a set of them for each request that passes its own).
        skipped = {name.lower() for name in session.skip_auto_headers}
        self._skip_auto_headers: tuple[str, ...] | None = (
            None
            if all(name.lower() in skipped for name in _SKIP_AUTO_HEADERS)
            else _SKIP_AUTO_HEADERS
        )

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
        upstream that fails after its headers were relayed aborts the visitor's connection (a
        small answer of known length, read whole first, is a 502 or 504 then).
        ``private``: the answer was granted to this visitor only (paid content), so no shared
        cache in front of the gateway may store it (:func:`private_cache_control`).
        """
        url = self.upstream_url(path, request.raw_path)
        headers = self.request_headers(request, paywall_headers)
        if is_websocket_upgrade(request):
            return await relay_websocket(self._session, request, url, headers)

        limit = self._options.max_request_body
        if limit is not None and (request.content_length or 0) > limit:
            return error_response(request, 413, "The request body is too large.")

        body_state: list[bool] = [False]  # set when the body outgrows max_request_body
        body = limited_body(request, limit, body_state) if request.body_exists else None
        try:
            upstream = await self._request(request.method, url, headers, body)
        except TimeoutError:
            log.warning("upstream timed out: %s %s", request.method, path)
            return error_response(request, 504, UPSTREAM_TIMED_OUT)
        except (aiohttp.ClientError, OSError) as exc:
            if body_state[0]:
                return error_response(request, 413, "The request body is too large.")
            log.warning("upstream unreachable: %s %s: %r", request.method, path, exc)
            return error_response(request, 502, UPSTREAM_UNREACHABLE)

        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=self.response_headers(upstream.headers, private=private),
            )
            length = upstream.content_length
            if length is not None and length <= WHOLE_BODY:
                # Small and of known length: read whole, then sent with the head in one write
                # (one await and one write instead of a streaming loop). An upstream that
                # stalls or fails before its body is complete is a 504 or a 502: nothing was
                # sent yet, so the visitor gets an answer instead of a cut connection.
                whole = await _read_whole(upstream, request.method, path)
                if not isinstance(whole, bytes):
                    return error_response(request, *whole)
                await response.prepare(request)
                await response.write_eof(whole)
                return response
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError, OSError) as failure:
                if isinstance(failure, ConnectionResetError) and _client_gone(request):
                    raise  # the visitor left; aiohttp's server deals with that
                log.warning(
                    "upstream failed mid-response: %s %s: %r", request.method, path, failure
                )
                _abort(request)
                return response
            await response.write_eof()
        return response

    async def relay(
        self,
        view: RequestView,
        path: str,
        paywall_headers: Mapping[str, str],
        done: Callable[[int], None],
        *,
        private: bool = False,
    ) -> bytes | Streamed:
        """:meth:`forward` for a request without a body that was not made into an aiohttp
        request (answered on arrival): the bytes aiohttp would send for :meth:`forward`'s
        answer, or a :class:`~gateway.web.protocol.Streamed` answer where :meth:`forward`
        streams. ``done(status)`` is called once the answer is complete (or cut short)."""
        url = self.upstream_url(path, view.target)
        incoming = view.headers
        headers = self.headers_for(incoming, view.peer, view.scheme, paywall_headers)
        try:
            upstream = await self._request(view.method, url, headers, None)
        except TimeoutError:
            log.warning("upstream timed out: %s %s", view.method, path)
            done(504)
            return error_bytes(incoming.get("Accept", ""), 504, UPSTREAM_TIMED_OUT)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("upstream unreachable: %s %s: %r", view.method, path, exc)
            done(502)
            return error_bytes(incoming.get("Accept", ""), 502, UPSTREAM_UNREACHABLE)

        status = upstream.status
        try:
            fields = self.response_headers(upstream.headers, private=private)
            length = upstream.content_length
            if length is not None and length <= WHOLE_BODY:
                # As forward(): read whole, a failure before the end is a 504 or a 502.
                whole = await _read_whole(upstream, view.method, path)
                if isinstance(whole, bytes):
                    data = relayed_head(view.method, status, upstream.reason, fields) + whole
                else:
                    status, data = whole[0], error_bytes(incoming.get("Accept", ""), *whole)
                upstream.release()
                done(status)
                return data
            head = relayed_head(view.method, status, upstream.reason, fields)
        except BaseException:
            upstream.close()
            raise
        chunked = fields.get("Transfer-Encoding") == "chunked"
        return Streamed(head, _UpstreamBody(upstream, view.method, path, chunked, done))

    async def _request(
        self, method: str, url: URL, headers: CIMultiDict[str], body: object
    ) -> aiohttp.ClientResponse:
        """The upstream request, as both ways in send it (``body`` None: none)."""
        return await self._session.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            auto_decompress=False,
            skip_auto_headers=self._skip_auto_headers,
            timeout=self._timeout,
        )

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
        return self.headers_for(request.headers, request.remote, request.scheme, paywall_headers)

    def headers_for(
        self,
        incoming: Headers,
        peer: str | None,
        scheme: str,
        paywall_headers: Mapping[str, str],
    ) -> CIMultiDict[str]:
        """The headers the upstream gets for a request with ``incoming`` headers from ``peer``
        over ``scheme``."""
        peer_trusted = self._trusted.is_trusted(peer)
        options = self._options
        headers = forward_headers(
            incoming.items(),
            paywall_headers,
            peer_trusted=peer_trusted,
            session_cookie=options.session_cookie,
            session_header=options.session_header,
            transfer_param=options.transfer_token_param,
            forward_session_token=options.forward_session_token,
            proxy=True,
        )
        add_forwarded(headers, incoming, peer=peer, scheme=scheme, peer_trusted=peer_trusted)
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


async def _read_whole(
    upstream: aiohttp.ClientResponse, method: str, path: str
) -> bytes | tuple[int, str]:
    """The upstream's whole body, or (logged) the status and message to answer instead: 504
    when it stalls, 502 when it fails before the end."""
    try:
        return await upstream.read()
    except TimeoutError:
        log.warning("upstream timed out mid-body: %s %s", method, path)
        return 504, UPSTREAM_TIMED_OUT
    except (aiohttp.ClientError, OSError) as broken:
        log.warning("upstream failed mid-body: %s %s: %r", method, path, broken)
        return 502, UPSTREAM_UNREACHABLE


class _UpstreamBody:
    """The upstream's body for a :class:`~gateway.web.protocol.Streamed` answer: as it comes,
    chunked when the head says so; an upstream that fails midway is logged and
    :class:`~gateway.web.protocol.Broken` (the visitor's connection is cut, as
    :meth:`UpstreamProxy.forward` cuts it)."""

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        method: str,
        path: str,
        chunked: bool,
        done: Callable[[int], None],
    ) -> None:
        self._upstream = upstream
        self._method = method
        self._path = path
        self._chunked = chunked
        self._done: Callable[[int], None] | None = done
        self._ended = False

    async def next(self) -> bytes:
        if self._ended:
            return b""
        try:
            chunk = await self._upstream.content.readany()
        except (aiohttp.ClientError, TimeoutError, OSError) as failure:
            log.warning(
                "upstream failed mid-response: %s %s: %r", self._method, self._path, failure
            )
            raise Broken from failure
        if not chunk:
            self._ended = True
            return b"0\r\n\r\n" if self._chunked else b""
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def close(self) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self._ended:
            self._upstream.release()
        else:
            self._upstream.close()  # not read to its end: the connection cannot be reused
        done(self._upstream.status)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    """Cut the visitor's connection: a truncated body must not look complete."""
    transport = request.transport
    if transport is not None:
        transport.abort()


UPSTREAM_PROXY: web.AppKey[UpstreamProxy] = web.AppKey("upstream_proxy", UpstreamProxy)
