"""UpstreamProxy against a real upstream aiohttp app on loopback, through a tiny gateway app."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.core.paths import normalise_path
from gateway.errors import BadRequest
from gateway.http.forward import private_cache_control, strip_query_param
from gateway.http.forwarded import TrustedProxies
from gateway.web.proxy import (
    UPSTREAM_PROXY,
    ProxyOptions,
    UpstreamProxy,
    create_upstream_session,
)
from tests.conftest import free_port

AiohttpServer = Callable[..., Awaitable[TestServer]]
AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

MB = 1024 * 1024
BIG = 64 * MB
CHUNK = b"\xa5" * (64 * 1024)


# --- the upstream -----------------------------------------------------------------------------


@dataclass
class UpstreamState:
    ws_close_codes: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    ws_headers: list[dict[str, str]] = field(default_factory=list)
    big_finished: asyncio.Event = field(default_factory=asyncio.Event)
    big_completed: bool = False


UPSTREAM_STATE = web.AppKey("upstream_state", UpstreamState)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
            "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
        }
    )


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if "length" in request.query:
        response.content_length = size
    await response.prepare(request)
    sent = 0 if request.method == "GET" else size  # a HEAD response has no body
    try:
        while sent < size:
            piece = CHUNK if size - sent >= len(CHUNK) else CHUNK[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        request.app[UPSTREAM_STATE].big_completed = True
    finally:
        request.app[UPSTREAM_STATE].big_finished.set()
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return web.json_response(
        {
            "length": length,
            "sha256": digest.hexdigest(),
            "content_length": request.headers.get("Content-Length"),
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
        }
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="too late")


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(b"hello, compressed world\n" * 100),
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain", "Vary": "Accept"},
    )


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere?x=1"})


async def hop_by_hop(request: web.Request) -> web.Response:
    return web.Response(
        text="ok",
        headers={
            "Connection": "X-Hop-Header",
            "X-Hop-Header": "private",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "Trailer": "X-Checksum",
            "X-End-To-End": "kept",
            "Set-Cookie": "site=1; Path=/",
        },
    )


async def dies_midway(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    if "length" in request.query:
        response.content_length = 1_000_000
    if "small" in request.query:  # relayed whole by the gateway (proxy.WHOLE_BODY)
        response.content_length = 10_000
    await response.prepare(request)
    await response.write(b"x" * 1000)
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    request.app[UPSTREAM_STATE].ws_headers.append(dict(request.headers))
    ws = web.WebSocketResponse(protocols=("chat", "v2"))
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data == "close-me":
                await ws.close(code=4000, message=b"bye")
                break
            await ws.send_str(f"echo:{message.data}")
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    request.app[UPSTREAM_STATE].ws_close_codes.put_nowait(ws.close_code)
    return ws


def upstream_app() -> web.Application:
    app = web.Application()
    app[UPSTREAM_STATE] = UpstreamState()
    app.router.add_get("/big", big)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hop", hop_by_hop)
    app.router.add_get("/dies", dies_midway)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> TestServer:
    return await aiohttp_server(upstream_app())


# --- the gateway ------------------------------------------------------------------------------

PAYWALL_HEADERS: web.AppKey[dict[str, str]] = web.AppKey("paywall_headers")


async def gateway_handler(request: web.Request) -> web.StreamResponse:
    try:
        path = normalise_path(request.raw_path.split("?")[0])
    except BadRequest as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    headers = request.app[PAYWALL_HEADERS]
    return await request.app[UPSTREAM_PROXY].forward(request, path, headers)


def upstream_proxy_context(
    options: ProxyOptions, trusted: TrustedProxies
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: an :class:`UpstreamProxy` at ``app[UPSTREAM_PROXY]``, its
    session closed on shutdown (as the gateway's app does it)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with create_upstream_session(options) as session:
            app[UPSTREAM_PROXY] = UpstreamProxy(session, options, trusted)
            yield

    return context


def gateway_app(
    options: ProxyOptions, trusted: TrustedProxies, paywall_headers: Mapping[str, str]
) -> web.Application:
    app = web.Application()
    app[PAYWALL_HEADERS] = dict(paywall_headers)
    app.cleanup_ctx.append(upstream_proxy_context(options, trusted))
    app.router.add_route("*", "/{tail:.*}", gateway_handler)
    return app


@pytest.fixture
def make_gateway(upstream: TestServer, aiohttp_client: AiohttpClient) -> GatewayFactory:
    async def make(
        *,
        upstream_url: URL | None = None,
        trusted: TrustedProxies | None = None,
        paywall_headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> TestClient[web.Request, web.Application]:
        proxy_options = ProxyOptions(upstream=upstream_url or upstream.make_url("/"), **options)
        app = gateway_app(
            proxy_options,
            trusted if trusted is not None else TrustedProxies(),
            paywall_headers if paywall_headers is not None else {},
        )
        return await aiohttp_client(app)

    return make


async def echoed(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


def header_values(data: Mapping[str, Any], name: str) -> list[str]:
    return [value for key, value in data["headers"] if key.lower() == name.lower()]


# --- plain requests ---------------------------------------------------------------------------


async def test_get_forwards_normalised_path(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.get("/a//b/../%7Euser/caf%c3%a9") as response:
        data = await echoed(response)
    assert data["method"] == "GET"
    assert data["raw_path"] == "/a/~user/caf%C3%A9"


async def test_host_is_the_upstreams(make_gateway: GatewayFactory, upstream: TestServer) -> None:
    client = await make_gateway()
    async with client.get("/x", headers={"Host": "public.example"}) as response:
        data = await echoed(response)
    assert header_values(data, "Host") == [f"127.0.0.1:{upstream.port}"]
    assert header_values(data, "X-Forwarded-Host") == ["public.example"]


async def test_base_path_is_prepended(make_gateway: GatewayFactory, upstream: TestServer) -> None:
    client = await make_gateway(upstream_url=upstream.make_url("/base/"))
    async with client.get("/page?q=1") as response:
        data = await echoed(response)
    assert data["raw_path"] == "/base/page?q=1"


async def test_ambiguous_path_never_reaches_upstream(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.get("/free/..%2Fpremium") as response:
        assert response.status == 400


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        pytest.param("", "", id="none"),
        pytest.param("transferToken=secret", "", id="only-token"),
        pytest.param(
            "a=1&transferToken=secret&b=%20x+y&c", "a=1&b=%20x+y&c", id="token-in-the-middle"
        ),
        pytest.param("TransferToken=s&x=%2F", "x=%2F", id="case-insensitive"),
        pytest.param("transfer%54oken=s&x=1", "x=1", id="percent-encoded-name"),
        pytest.param("x=1&transferToken", "x=1", id="no-value"),
        pytest.param("a=1;transferToken=s&b=2", "b=2", id="semicolon-hidden"),
        pytest.param(
            "transferTokens=1&y=transferToken", "transferTokens=1&y=transferToken", id="lookalikes"
        ),
        pytest.param("a=%zz&&b=", "a=%zz&&b=", id="byte-for-byte"),
    ],
)
def test_strip_query_param(query: str, forwarded: str) -> None:
    assert strip_query_param(query, "transferToken") == forwarded


async def test_query_forwarded_without_transfer_token(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    url = URL("/q?a=1&transferToken=secret&b=%20x+y&c=%C3%A9", encoded=True)
    async with client.get(url) as response:
        data = await echoed(response)
    assert data["raw_path"] == "/q?a=1&b=%20x+y&c=%C3%A9"
    async with client.get(URL("/q?transferToken=secret", encoded=True)) as response:
        data = await echoed(response)
    assert data["raw_path"] == "/q"


async def test_head(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.head("/big?size=1000&length=1") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1000"
        assert await response.read() == b""


async def test_post_with_body(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    body = os.urandom(100_000)
    async with client.post("/upload", data=body) as response:
        data = await response.json()
    assert data == {
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "content_length": str(len(body)),
        "transfer_encoding": None,
    }


async def test_chunked_upload_without_content_length(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    pieces = [os.urandom(10_000) for _ in range(7)]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with client.put("/upload", data=body()) as response:
        data = await response.json()
    assert data["length"] == 70_000
    assert data["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert data["content_length"] is None
    assert data["transfer_encoding"] == "chunked"


async def test_empty_post(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.post("/echo") as response:
        data = await echoed(response)
    assert data["method"] == "POST"
    assert data["body_length"] == 0
    assert header_values(data, "Content-Length") == ["0"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_body_limit(make_gateway: GatewayFactory, chunked: bool) -> None:
    client = await make_gateway(max_request_body=50_000)
    payload = b"z" * 200_000

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 10_000):
            yield payload[start : start + 10_000]

    async with client.post("/upload", data=body() if chunked else payload) as response:
        assert response.status == 413
    async with client.post("/upload", data=b"small") as response:
        assert response.status == 200


# --- headers ----------------------------------------------------------------------------------


async def test_client_paywall_headers_are_replaced(make_gateway: GatewayFactory) -> None:
    decided = {"X-Paywall-Customer-Id": "c-1", "X-Paywall-Access": "granted"}
    client = await make_gateway(paywall_headers=decided)
    sent = {
        "X-Paywall-Access": "granted-by-me",
        "x-paywall-customer-id": "admin",
        "X-PAYWALL-CACHE": "hit",
        "X-Paywallish": "kept",
    }
    async with client.get("/x", headers=sent) as response:
        data = await echoed(response)
    paywall = {k: v for k, v in data["headers"] if k.lower().startswith("x-paywall-")}
    assert paywall == decided
    assert header_values(data, "X-Paywallish") == ["kept"]


async def test_forwarded_headers_from_trusted_proxy(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()  # loopback, where the test client connects from, is trusted
    sent = {
        "X-Forwarded-For": "6.6.6.6, 198.51.100.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "www.example.com",
        "X-Real-IP": "198.51.100.9",
    }
    async with client.get("/x", headers=sent) as response:
        data = await echoed(response)
    assert header_values(data, "X-Forwarded-For") == ["6.6.6.6, 198.51.100.9, 127.0.0.1"]
    assert header_values(data, "X-Forwarded-Proto") == ["https"]
    assert header_values(data, "X-Forwarded-Host") == ["www.example.com"]
    assert header_values(data, "X-Real-IP") == ["198.51.100.9"]


async def test_forwarded_headers_from_untrusted_peer(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(trusted=TrustedProxies([]))
    sent = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Prefix": "/admin",
        "Forwarded": "for=6.6.6.6",
        "X-Real-IP": "6.6.6.6",
        "X-Original-URI": "/free",
        "Host": "www.example.com",
    }
    async with client.get("/x", headers=sent) as response:
        data = await echoed(response)
    assert header_values(data, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(data, "X-Forwarded-Proto") == ["http"]
    assert header_values(data, "X-Forwarded-Host") == ["www.example.com"]
    for name in ("X-Forwarded-Prefix", "Forwarded", "X-Real-IP", "X-Original-URI"):
        assert header_values(data, name) == [], name


async def test_hop_by_hop_request_headers_removed(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    sent = {
        "Connection": "keep-alive, X-Hop-Header",
        "X-Hop-Header": "private",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Proxy-Connection": "keep-alive",
        "X-End-To-End": "kept",
    }
    async with client.get("/x", headers=sent) as response:
        data = await echoed(response)
    names = {name.lower() for name, _ in data["headers"]}
    for hop in ("x-hop-header", "keep-alive", "te", "trailer", "proxy-authorization"):
        assert hop not in names, hop
    assert "proxy-connection" not in names
    assert header_values(data, "X-End-To-End") == ["kept"]


async def test_hop_by_hop_response_headers_removed(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.get("/hop") as response:
        assert await response.text() == "ok"
        headers = response.headers
    for hop in ("X-Hop-Header", "Keep-Alive", "Proxy-Authenticate", "Trailer"):
        assert hop not in headers, hop
    assert headers["X-End-To-End"] == "kept"
    assert headers["Set-Cookie"] == "site=1; Path=/"


async def test_session_credentials_are_not_forwarded(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    sent = {
        "Cookie": "a=1; paywall_session=tok; b=2",
        "X-Plenigo-Customer-Session": "tok",
        "Authorization": "Bearer tok",
        "Referer": "https://www.example.com/page?transferToken=abc&x=1#top",
    }
    async with client.get("/x", headers=sent) as response:
        data = await echoed(response)
    assert header_values(data, "Cookie") == ["a=1; b=2"]
    assert header_values(data, "X-plenigo-customer-session") == []
    assert header_values(data, "Authorization") == []
    assert header_values(data, "Referer") == ["https://www.example.com/page?x=1#top"]


async def test_only_the_session_cookie_means_no_cookie_header(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway()
    async with client.get("/x", headers={"Cookie": "paywall_session=tok"}) as response:
        data = await echoed(response)
    assert header_values(data, "Cookie") == []


async def test_basic_authorization_is_forwarded(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.get("/x", headers={"Authorization": "Basic Zm9vOmJhcg=="}) as response:
        data = await echoed(response)
    assert header_values(data, "Authorization") == ["Basic Zm9vOmJhcg=="]


async def test_forward_session_token_keeps_credentials(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(forward_session_token=True)
    sent = {
        "Cookie": "a=1; paywall_session=tok; b=2",
        "X-Plenigo-Customer-Session": "tok",
        "Authorization": "Bearer tok",
    }
    async with client.get("/x?transferToken=never", headers=sent) as response:
        data = await echoed(response)
    assert header_values(data, "Cookie") == ["a=1; paywall_session=tok; b=2"]
    assert header_values(data, "X-plenigo-customer-session") == ["tok"]
    assert header_values(data, "Authorization") == ["Bearer tok"]
    assert data["raw_path"] == "/x"


# --- responses --------------------------------------------------------------------------------


async def test_gzip_passes_through_byte_identical(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    expected = gzip.compress(b"hello, compressed world\n" * 100)
    async with client.get("/gzip", auto_decompress=False) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        body = await response.read()
    assert gzip.decompress(body) == gzip.decompress(expected)
    assert response.headers["Content-Length"] == str(len(body))


async def test_redirect_is_passed_through(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.get("/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere?x=1"


async def test_upstream_down_is_502(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(upstream_url=URL(f"http://127.0.0.1:{free_port()}"))
    async with client.get("/x") as response:
        assert response.status == 502
        assert response.content_type == "text/plain"
        assert "not reachable" in await response.text()
    async with client.get("/x", headers={"Accept": "application/json"}) as response:
        assert response.status == 502
        assert (await response.json())["error"] == "bad_gateway"


async def test_slow_upstream_is_504(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(read_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get("/slow", headers={"Accept": "application/json"}) as response:
        assert response.status == 504
        assert (await response.json())["error"] == "gateway_timeout"
    assert loop.time() - started < 2


@pytest.mark.parametrize("length", [False, True], ids=["chunked", "content-length"])
async def test_upstream_dying_mid_body_aborts_client(
    make_gateway: GatewayFactory, length: bool
) -> None:
    client = await make_gateway()
    path = "/dies?length=1" if length else "/dies"
    async with asyncio.timeout(5):
        async with client.get(path) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_upstream_dying_mid_small_body_is_a_502(make_gateway: GatewayFactory) -> None:
    # A small answer of known length is read whole before anything is sent: its failure is
    # still the gateway's to answer, and the visitor never sees a truncated page.
    client = await make_gateway()
    async with asyncio.timeout(5):
        async with client.get("/dies?small=1") as response:
            assert response.status == 502
            assert "not reachable" in await response.text()


@pytest.mark.parametrize("size", [0, 1, 65_536, 65_537, 300_000])
async def test_bodies_around_the_whole_body_limit_arrive_exactly(
    make_gateway: GatewayFactory, size: int
) -> None:
    client = await make_gateway()
    async with client.get(f"/big?size={size}&length=1") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(size)
        body = await response.read()
    assert body == (CHUNK * (size // len(CHUNK) + 1))[:size]


async def test_expect_100_continue(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.post("/upload", data=b"x" * 5000, expect100=True) as response:
        data = await response.json()
    assert data["length"] == 5000


async def test_visitor_leaving_mid_download_releases_upstream(
    make_gateway: GatewayFactory, upstream: TestServer
) -> None:
    client = await make_gateway()
    async with client.get(f"/big?size={BIG}") as response:
        await response.content.readexactly(1024 * 1024)
        response.close()
    state = upstream.app[UPSTREAM_STATE]
    await asyncio.wait_for(state.big_finished.wait(), 5)
    assert not state.big_completed


# --- streaming with bounded memory ------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryWatch:
    """Peak Python allocations (tracemalloc) and peak RSS growth while a transfer runs."""

    def __init__(self) -> None:
        self.rss_growth = 0
        self.traced_peak = 0
        self._task: asyncio.Task[None] | None = None
        self._baseline = 0

    async def _sample(self) -> None:
        while True:
            self.rss_growth = max(self.rss_growth, rss_bytes() - self._baseline)
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> MemoryWatch:
        self._baseline = rss_bytes()
        tracemalloc.start()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.rss_growth = max(self.rss_growth, rss_bytes() - self._baseline)


async def test_big_download_streams_with_bounded_memory(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    received = 0
    async with MemoryWatch() as watch, client.get(f"/big?size={BIG}") as response:
        assert response.status == 200
        async for chunk in response.content.iter_chunked(256 * 1024):
            received += len(chunk)
    assert received == BIG
    print(
        f"download {BIG // MB} MB: traced peak {watch.traced_peak / MB:.1f} MB, "
        f"RSS growth {watch.rss_growth / MB:.1f} MB"
    )
    assert watch.traced_peak < 8 * MB
    assert watch.rss_growth < 32 * MB


async def test_big_upload_streams_with_bounded_memory(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // len(CHUNK)):
            yield CHUNK

    async with MemoryWatch() as watch, client.post("/upload", data=body()) as response:
        data = await response.json()
    assert data["length"] == BIG
    print(
        f"upload {BIG // MB} MB: traced peak {watch.traced_peak / MB:.1f} MB, "
        f"RSS growth {watch.rss_growth / MB:.1f} MB"
    )
    assert watch.traced_peak < 8 * MB
    assert watch.rss_growth < 32 * MB


# --- WebSocket --------------------------------------------------------------------------------


async def test_websocket_round_trip_and_client_close(
    make_gateway: GatewayFactory, upstream: TestServer
) -> None:
    client = await make_gateway(paywall_headers={"X-Paywall-Access": "granted"})
    sent = {"Cookie": "paywall_session=tok; a=1", "X-Paywall-Access": "forged"}
    async with client.ws_connect("/ws?transferToken=t&x=1", protocols=("v2",), headers=sent) as ws:
        assert ws.protocol == "v2"
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        await ws.send_bytes(b"\x00\x01\x02")
        assert await ws.receive_bytes(timeout=5) == b"\x02\x01\x00"
        await ws.close(code=4001, message=b"done")
        assert ws.close_code == 4001
    state = upstream.app[UPSTREAM_STATE]
    assert await asyncio.wait_for(state.ws_close_codes.get(), 5) == 4001
    [headers] = state.ws_headers
    assert headers["X-Paywall-Access"] == "granted"
    assert headers["Cookie"] == "a=1"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["Sec-WebSocket-Protocol"] == "v2"


async def test_websocket_upstream_close_code_reaches_client(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("close-me")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 4000
        assert message.extra == "bye"


async def test_websocket_upstream_down_is_502(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(upstream_url=URL(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as failure:
        await client.ws_connect("/ws")
    assert failure.value.status == 502


# --- construction -----------------------------------------------------------------------------


async def test_create_upstream_session_defaults() -> None:
    options = ProxyOptions(upstream=URL("http://127.0.0.1:8000"))
    async with create_upstream_session(options) as session:
        assert session.auto_decompress is False
        assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
        assert session.timeout.sock_read == options.read_timeout
        assert session.timeout.connect == options.connect_timeout
        UpstreamProxy(session, options, TrustedProxies())


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"upstream": URL("/relative")}, id="relative-upstream"),
        pytest.param({"upstream": URL("ftp://h/")}, id="not-http"),
        pytest.param({"upstream": URL("http://h/"), "read_timeout": 0}, id="zero-timeout"),
        pytest.param({"upstream": URL("http://h/"), "max_request_body": -1}, id="negative-limit"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"upstream|timeouts|max_request_body"):
        ProxyOptions(**kwargs)


def test_options_are_frozen() -> None:
    options = ProxyOptions(upstream=URL("http://h/"))
    with pytest.raises(AttributeError):
        options.read_timeout = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("upstream", "relayed"),
    [
        ([], "private"),
        (["public, max-age=60, s-maxage=600"], "private, max-age=60"),
        (["max-age=60", "Public"], "private, max-age=60"),
        (["S-MAXAGE=10, proxy-revalidate, must-revalidate"], "private, must-revalidate"),
        (["private, max-age=5"], "private, max-age=5"),
        (["no-store"], "no-store"),
        (['no-cache="Set-Cookie", max-age=0'], 'private, no-cache="Set-Cookie", max-age=0'),
        ([" , ,"], "private"),
    ],
)
def test_a_private_answer_never_lets_a_shared_cache_keep_it(
    upstream: list[str], relayed: str
) -> None:
    assert private_cache_control(upstream) == relayed
