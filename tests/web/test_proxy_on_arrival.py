"""Proxy mode's pages answered on arrival (gateway.web.handlers' ``answer_now``, then
gateway.web.proxy's ``UpstreamProxy.relay``): the decision, then the upstream's answer, relayed
without aiohttp's request and response objects. What the visitor gets must be what aiohttp's
way (``UpstreamProxy.forward``) sends, byte for byte but the Date, for every kind of upstream
answer: read whole, streamed with its length, streamed chunked, without a body, failing. Raw
sockets throughout: the bytes on the connection are what is checked."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.web import protocol
from gateway.web.proxy import WHOLE_BODY
from tests.conftest import AccessCapture, free_port
from tests.service.processes import eventually
from tests.web.conftest import Stack, StartStack
from tests.web.test_answer_now import PLAIN, answering_server, status_of

NO_RIGHTS = "paywall_session=demo-session-no-rights"
DATES = re.compile(rb"\r\nDate: [^\r]*\r\n")
BIG = bytes(range(256)) * (WHOLE_BODY // 256 * 3)  # longer than what is read whole
CHUNKS = [b"first chunk;", b"x" * 70_000, b"last"]


async def _small(request: web.Request) -> web.Response:
    return web.json_response(
        {"path": request.raw_path, "headers": sorted(request.headers.items())},
        headers={"Cache-Control": "public, max-age=60, s-maxage=600", "X-Upstream": "yes"},
    )


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=BIG, content_type="application/octet-stream")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for chunk in CHUNKS:
        await response.write(chunk)
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Empty": "1"})


async def _not_modified(request: web.Request) -> web.Response:
    return web.Response(status=304, headers={"ETag": '"v1"'})


async def _empty(request: web.Request) -> web.Response:
    return web.Response(body=b"", headers={"Cache-Control": "no-store"})


async def _cookies(request: web.Request) -> web.Response:
    response = web.Response(text="with cookies", reason="Fine Thanks")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    response.headers.add("x-lower-case", "kept as sent")
    return response


async def _no_type(request: web.Request) -> web.StreamResponse:
    # Neither a type nor a length: aiohttp adds both of its defaults.
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"untyped")
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="too late")


async def _cut_small(request: web.Request) -> web.StreamResponse:
    # Promises 100 bytes, sends 10, goes away: the body is read whole, so it is a 502.
    response = web.StreamResponse(headers={"Content-Length": "100"})
    await response.prepare(request)
    await response.write(b"0123456789")
    assert request.transport is not None
    request.transport.close()
    return response


async def _cut_big(request: web.Request) -> web.StreamResponse:
    # Promises more than is read whole: streamed, so the visitor's connection is cut.
    response = web.StreamResponse(headers={"Content-Length": str(len(BIG))})
    await response.prepare(request)
    await response.write(BIG[:1000])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return response


UPSTREAM = {
    "/premium/small": _small,
    "/premium/big": _big,
    "/premium/chunked": _chunked,
    "/premium/no-content": _no_content,
    "/premium/not-modified": _not_modified,
    "/premium/empty": _empty,
    "/premium/cookies": _cookies,
    "/premium/no-type": _no_type,
    "/premium/slow": _slow,
    "/premium/cut-small": _cut_small,
    "/premium/cut-big": _cut_big,
    "/news": _small,
}


@pytest.fixture
async def proxy_stack(start_stack: StartStack, aiohttp_server: Any, slow_way: list[str]) -> Stack:
    """A proxy-mode gateway in front of an upstream with every kind of answer (UPSTREAM);
    ``slow_way`` counts from its start (the app binds the driver's handler)."""
    app = web.Application()
    for path, handler in UPSTREAM.items():
        app.router.add_get(path, handler)
    upstream: TestServer = await aiohttp_server(app)
    return await start_stack(
        server={"upstream": str(upstream.make_url("/")), "upstream_read_timeout": 0.5}
    )


def get(path: str, cookie: str | None = PLAIN, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: news.example", *extra]
    if cookie is not None:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response as it came: framed by Content-Length, chunked, or without a body."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        status = status_of(head)
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        if status in (204, 304):
            return head
        if length is not None:
            return head + await reader.readexactly(int(length.group(1)))
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head, head
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line, 16)
            chunk = await reader.readexactly(size + 2)
            body += size_line + chunk
            if size == 0:
                return head + body


def dechunked(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    if b"\r\nTransfer-Encoding: chunked\r\n" not in head + b"\r\n":
        return body
    data = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data
        data, body = data + body[:size], body[size + 2 :]


def same_content(response: bytes) -> bytes:
    """``response`` with a chunked body's chunks joined: where one chunk ends is timing."""
    head, _, _ = response.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + dechunked(response)


async def answers(port: int, requests: list[bytes]) -> list[bytes]:
    """The responses to ``requests``, one after the other on one connection, Dates blanked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        found = []
        for request in requests:
            writer.write(request)
            found.append(DATES.sub(b"\r\nDate: -\r\n", await read_response(reader)))
        return found
    finally:
        writer.close()


async def test_the_bytes_are_those_aiohttp_sends(
    proxy_stack: Stack, slow_way: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = proxy_stack.gateway.port
    assert port is not None
    kinds = [get(path) for path in UPSTREAM if "slow" not in path and "cut" not in path]
    requests = [
        *kinds,
        get("/premium/small"),  # now cached: decided on arrival
        get("/premium/small?transferToken=x&keep=1", None),  # a miss of another kind
        get("/premium/small", NO_RIGHTS),  # refused: the gateway's own page
        get("/premium/small", NO_RIGHTS),  # refused from memory, at once
        get("/premium/small", None),  # no credential
        get("/news", None),
        get("/premium/small", None, "Accept: application/json", "X-Forwarded-For: 10.0.0.1"),
    ]
    await answers(port, requests)  # the misses (the upstream would see "miss")
    on_arrival = await answers(port, requests)
    assert slow_way == []
    # Connections opened from now on go aiohttp's way: same gateway, same caches.
    monkeypatch.setattr(protocol, "ANSWERS_SUPPORTED", False)
    through_aiohttp = await answers(port, requests)
    assert len(slow_way) == len(requests)
    assert list(map(same_content, on_arrival)) == list(map(same_content, through_aiohttp))
    by_path = {
        request.split(b" ")[1]: answer for request, answer in zip(kinds, on_arrival, strict=False)
    }
    assert dechunked(by_path[b"/premium/big"]) == BIG
    assert b"\r\nContent-Length: %d\r\n" % len(BIG) in by_path[b"/premium/big"]
    assert dechunked(by_path[b"/premium/chunked"]) == b"".join(CHUNKS)
    assert b"\r\nCache-Control: private, max-age=60\r\n" in by_path[b"/premium/small"]
    assert b"\r\nCache-Control: public, max-age=60, s-maxage=600\r\n" in by_path[b"/news"]
    assert by_path[b"/premium/cookies"].startswith(b"HTTP/1.1 200 Fine Thanks\r\n")


RAW = {
    # No Content-Type, Date or Server: aiohttp adds what it adds to any answer without them.
    b"/premium/bare": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"/premium/bare-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    b"/premium/bare-empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"/premium/no-reason": b"HTTP/1.1 299 \r\nContent-Length: 2\r\nServer: mine\r\n\r\nok",
    b"/premium/hop-by-hop": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT"
        b"\r\n\r\nok"
    ),
}


async def test_the_bytes_are_those_aiohttp_sends_for_a_sparse_upstream(
    start_stack: StartStack, slow_way: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(RAW[head.split(b" ")[1]])
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        upstream = server.sockets[0].getsockname()[1]
        stack = await start_stack(server={"upstream": f"http://127.0.0.1:{upstream}/"})
        port = stack.gateway.port
        assert port is not None
        requests = [get(path.decode()) for path in RAW]
        await answers(port, requests)  # the first one's decision is a miss
        on_arrival = await answers(port, requests)
        assert slow_way == []
        monkeypatch.setattr(protocol, "ANSWERS_SUPPORTED", False)
        through_aiohttp = await answers(port, requests)
        assert len(slow_way) == len(requests)
    finally:
        server.close()
    assert list(map(same_content, on_arrival)) == list(map(same_content, through_aiohttp))
    bare = on_arrival[0]
    assert b"\r\nContent-Type: application/octet-stream\r\n" in bare
    assert b"\r\nServer: " in bare
    assert on_arrival[3].startswith(b"HTTP/1.1 299 \r\n")
    assert b"X-Secret" not in on_arrival[4]
    assert b"Keep-Alive" not in on_arrival[4]


async def test_pages_are_decided_once_and_recorded_once(
    proxy_stack: Stack, slow_way: list[str], access_capture: AccessCapture
) -> None:
    port = proxy_stack.gateway.port
    assert port is not None
    got = await answers(port, [get("/premium/small")] * 5 + [get("/premium/big")])
    assert [status_of(answer) for answer in got] == [200] * 6
    assert slow_way == []
    metrics = proxy_stack.metrics
    assert metrics.value("paywall_requests_total", {"mode": "proxy", "outcome": "granted"}) == 6
    hits = {"cache": "access", "result": "hit", "tier": "l1"}
    assert metrics.value("paywall_cache_lookups_total", hits) == 5
    lines = access_capture.lines()
    assert [(line["path"], line["status"], line["cache"]) for line in lines] == [
        ("/premium/small", 200, "miss"),
        *[("/premium/small", 200, "hit")] * 4,
        ("/premium/big", 200, "hit"),
    ]
    assert len(proxy_stack.content_requests) == 0  # the stack's own content server: unused


async def test_a_declined_later_hands_its_decision_to_aiohttps_way(
    proxy_stack: Stack, slow_way: list[str], access_capture: AccessCapture
) -> None:
    # Pipelined in one write: only the last request of a read may be answered later, the
    # others go aiohttp's way, with the decision made on arrival (counted once).
    port = proxy_stack.gateway.port
    assert port is not None
    await answers(port, [get("/premium/small")])  # cached from now on
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/premium/small?n=1") + get("/premium/small?n=2"))
    first, second = await read_response(reader), await read_response(reader)
    writer.close()
    assert b'"path": "/premium/small?n=1"' in first
    assert b'"path": "/premium/small?n=2"' in second
    # The first declined, the second was never offered (pipelined behind one aiohttp holds).
    assert slow_way == ["/premium/small?n=1", "/premium/small?n=2"]
    hits = {"cache": "access", "result": "hit", "tier": "l1"}
    assert proxy_stack.metrics.value("paywall_cache_lookups_total", hits) == 2
    assert len(access_capture.lines()) == 3


async def test_requests_sent_while_a_body_streams_are_answered_after_it(
    proxy_stack: Stack,
) -> None:
    port = proxy_stack.gateway.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/premium/big"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")  # the head is out, the body is coming
    writer.write(get("/premium/chunked") + get("/premium/small"))
    await writer.drain()
    body = await reader.readexactly(len(BIG))
    assert status_of(head) == 200
    assert body == BIG
    assert dechunked(await read_response(reader)) == b"".join(CHUNKS)
    assert status_of(await read_response(reader)) == 200
    writer.close()


async def test_a_client_that_reads_slowly_gets_the_whole_body(proxy_stack: Stack) -> None:
    port = proxy_stack.gateway.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
    writer.write(get("/premium/chunked") + get("/premium/big"))
    first = await read_response(reader)
    assert dechunked(first) == b"".join(CHUNKS)
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    async with asyncio.timeout(10):
        while len(body) < len(BIG):
            body += await reader.read(4096)
            await asyncio.sleep(0.001)
    assert status_of(head) == 200
    assert body == BIG
    writer.close()


@pytest.mark.parametrize("ways", ["on arrival", "aiohttp"])
async def test_upstream_failures_are_answered_as_aiohttps_way_answers_them(
    proxy_stack: Stack, monkeypatch: pytest.MonkeyPatch, ways: str, caplog: pytest.LogCaptureFixture
) -> None:
    if ways == "aiohttp":
        monkeypatch.setattr(protocol, "ANSWERS_SUPPORTED", False)
    port = proxy_stack.gateway.port
    assert port is not None
    timed_out, cut_small = await answers(port, [get("/premium/slow"), get("/premium/cut-small")])
    assert status_of(timed_out) == 504
    assert b"did not answer in time" in timed_out
    assert status_of(cut_small) == 502
    # A body cut short after its head was sent: the visitor's connection is cut too.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/premium/cut-big"))
    with pytest.raises(asyncio.IncompleteReadError):
        await read_response(reader)
    writer.close()
    assert "upstream failed mid-response" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_an_unreachable_upstream_is_a_502_either_way(
    start_stack: StartStack, slow_way: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await start_stack(server={"upstream": f"http://127.0.0.1:{free_port()}/"})
    port = stack.gateway.port
    assert port is not None
    requests = [get("/premium/a"), get("/premium/a", PLAIN, "Accept: application/json")]
    on_arrival = await answers(port, requests)
    monkeypatch.setattr(protocol, "ANSWERS_SUPPORTED", False)
    through_aiohttp = await answers(port, requests)
    assert [status_of(answer) for answer in on_arrival] == [502, 502]
    assert slow_way == ["/premium/a"] * 2  # the second round only
    assert on_arrival == through_aiohttp


async def test_a_client_that_leaves_mid_body_leaves_nothing_behind(
    proxy_stack: Stack, access_capture: AccessCapture, caplog: pytest.LogCaptureFixture
) -> None:
    port = proxy_stack.gateway.port
    assert port is not None
    await answers(port, [get("/premium/small")])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
    writer.write(get("/premium/big"))
    await reader.readuntil(b"\r\n\r\n")
    await reader.read(1024)
    writer.transport.abort()  # gone, most of the body unread

    async def both_logged() -> bool:
        return len(access_capture.lines()) == 2

    await eventually(both_logged)
    assert [line["status"] for line in access_capture.lines()] == [200, 200]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # The gateway serves on.
    assert [status_of(answer) for answer in await answers(port, [get("/premium/big")])] == [200]


class _Source:
    """A body source for the connection's own tests: ``chunks``, then ``failure`` if any."""

    def __init__(self, chunks: list[bytes], failure: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.failure = failure
        self.closed = 0

    async def next(self) -> bytes:
        await asyncio.sleep(0)
        if self.chunks:
            return self.chunks.pop(0)
        if self.failure is not None:
            raise self.failure
        return b""

    def close(self) -> None:
        self.closed += 1


async def streaming_server(
    head: bytes, source: _Source, shutdown_timeout: float = 60.0
) -> tuple[protocol.GatewayRunner, int]:
    """A listener of the gateway's runner that answers every request on arrival, later, with
    ``head`` and then ``source``'s body. The caller cleans it up."""

    async def streamed() -> protocol.Streamed:
        return protocol.Streamed(head, source)

    def answerer(*args: Any) -> protocol.Later:
        return protocol.Later(None, streamed)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("everything is answered on arrival")

    return await answering_server(answerer, handler, shutdown_timeout)


@pytest.mark.parametrize("failure", [None, protocol.Broken(), RuntimeError("a bug")])
async def test_a_streamed_answer_is_sent_whole_or_its_connection_cut(
    failure: Exception | None, caplog: pytest.LogCaptureFixture
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
    source = _Source([b"abc", b"def"], failure)
    runner, port = await streaming_server(head, source)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/a", None))
        received = b""
        async with asyncio.timeout(5):
            while failure is not None or len(received) < len(head) + 6:
                chunk = await reader.read(1000)
                if not chunk:
                    break
                received += chunk
        assert received == head + b"abcdef"
        if failure is None:  # kept alive: the next request is answered too
            source.chunks = [b"ghijkl"]
            writer.write(get("/b", None))
            async with asyncio.timeout(5):
                assert await reader.readexactly(len(head) + 6) == head + b"ghijkl"
        else:
            assert reader.at_eof()  # cut: six bytes that might have been twelve
        writer.close()
    finally:
        await runner.cleanup()
    assert source.closed == (2 if failure is None else 1)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == (1 if isinstance(failure, RuntimeError) else 0)


async def test_a_graceful_shutdown_sends_a_streamed_body_whole() -> None:
    # A body (1.5 s) that outlasts one phase of the shutdown timeout (1 s; aiohttp allows a
    # request its handler is on two) is sent whole while the runner shuts down.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    started = asyncio.Event()

    class Slow(_Source):
        async def next(self) -> bytes:
            started.set()
            if self.chunks:
                await asyncio.sleep(0.5)
            return await super().next()

    source = Slow([b"abc", b"def", b"ghi"])
    runner, port = await streaming_server(head, source, shutdown_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/a", None))
    async with asyncio.timeout(10):
        await started.wait()
        stopping = asyncio.create_task(runner.cleanup())  # while the body is on its way
        received = await reader.readexactly(len(head) + 9)
        await stopping
    assert received == head + b"abcdefghi"
    assert source.closed == 1
    writer.close()
