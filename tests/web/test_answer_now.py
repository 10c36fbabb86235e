"""Answers made on arrival (gateway.web.protocol's ANSWER_NOW, the driver's ``answer_now``): a
decision this process holds in memory is answered as the parser reads the request, without
aiohttp's request and response objects. Raw sockets throughout: what is checked is the bytes
and their order on the connection, and which way each request went (the driver's ``handle``
is aiohttp's way)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.replies import Reply
from gateway.web import protocol, responses
from gateway.web.protocol import ANSWERS_SUPPORTED
from gateway.web.responses import reply_bytes
from tests.conftest import AccessCapture, free_port
from tests.service.processes import eventually
from tests.web.conftest import Stack, StartStack

PLAIN = "paywall_session=demo-session-plain"
NO_RIGHTS = "paywall_session=demo-session-no-rights"
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def auth_request(
    cookie: str | None = PLAIN,
    uri: str = "/premium/a",
    *,
    method: str = "GET",
    version: str = "1.1",
    extra: tuple[str, ...] = (),
    target: str = "/_paywall/auth",
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: news.example"]
    lines.append(f"X-Original-URI: {uri}")
    if cookie is not None:
        lines.append(f"Cookie: {cookie}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection:
    """One client connection that reads whole responses (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_only: bool = False) -> bytes:
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            if head_only:
                return head
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            assert length is not None, head
            return head + await self.reader.readexactly(int(length.group(1)))

    async def closed(self, within: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(within):
                return await self.reader.read(1) == b""
        except TimeoutError:
            return False


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], Any]]:
    opened: list[asyncio.StreamWriter] = []

    async def open_connection(port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(writer)
        return Connection(reader, writer)

    yield open_connection
    for writer in opened:
        writer.close()


async def auth_stack(start_stack: StartStack) -> tuple[Stack, int]:
    stack = await start_stack(server={"mode": "auth_request"})
    port = stack.gateway.port
    assert port is not None
    return stack, port


async def cached(
    start_stack: StartStack, connect: Callable[[int], Any]
) -> tuple[Stack, Connection]:
    """An auth_request gateway and a connection to it whose first request (a miss) put the
    plain session's decision into the cache."""
    stack, port = await auth_stack(start_stack)
    client = await connect(port)
    await client.send(auth_request())
    await client.response()
    return stack, client


async def answering_server(
    answerer: protocol.AnswerNow,
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    shutdown_timeout: float = 60.0,
) -> tuple[protocol.GatewayRunner, int]:
    """A listener of the gateway's runner for an app of the test's own: ``answerer`` offered
    each request on arrival, ``handler`` the rest (aiohttp's way). The caller cleans it up."""
    app = web.Application()
    app[protocol.ANSWER_NOW] = answerer
    app[protocol.DIRECT_HANDLER] = handler
    runner = protocol.GatewayRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_the_installed_aiohttp_supports_it() -> None:
    # Without these internals every request would silently take aiohttp's (slower) way.
    assert ANSWERS_SUPPORTED


async def test_a_cached_decision_is_answered_on_arrival_and_recorded_once(
    start_stack: StartStack,
    slow_way: list[str],
    connect: Callable[[int], Any],
    access_capture: AccessCapture,
) -> None:
    stack, port = await auth_stack(start_stack)
    client = await connect(port)
    await client.send(auth_request())
    first = await client.response()
    assert b"X-Paywall-Cache: miss" in first
    assert slow_way == []  # a miss awaits the platform, then is answered: not aiohttp's way
    for _ in range(20):
        await client.send(auth_request())
        answer = await client.response()
        assert status_of(answer) == 200
        assert b"X-Paywall-Cache: hit\r\n" in answer
        assert b"X-Paywall-Customer-Id: 100001\r\n" in answer
    assert slow_way == []
    assert (
        stack.metrics.value(
            "paywall_requests_total", {"mode": "auth_request", "outcome": "granted"}
        )
        == 21
    )
    assert (
        stack.metrics.value(
            "paywall_cache_lookups_total", {"cache": "access", "result": "hit", "tier": "l1"}
        )
        == 20
    )
    lines = access_capture.lines()
    assert [line["cache"] for line in lines] == ["miss"] + ["hit"] * 20
    assert {line["client"] for line in lines} == {"127.0.0.1"}


async def _bytes_of(port: int, requests: list[bytes], connect: Callable[[int], Any]) -> list[bytes]:
    client = await connect(port)
    answers = []
    for request in requests:
        await client.send(request)
        answers.append(DATE.sub(b"\r\nDate: -\r\n", await client.response()))
    return answers


async def test_the_bytes_are_those_aiohttp_sends(
    start_stack: StartStack,
    slow_way: list[str],
    connect: Callable[[int], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests = [
        auth_request(),  # a miss (aiohttp's way), then
        auth_request(),  # a cached grant
        auth_request(NO_RIGHTS),  # a miss, then
        auth_request(NO_RIGHTS),  # a cached denial: 403 with a body
        auth_request(None),  # no credential: 401 with the paywall page
        auth_request(f"{PLAIN}; {PLAIN}"),  # ambiguous: 400
        auth_request(target="/nothing"),  # a 404 of the policy's own
        auth_request(target="/_paywall/deny", uri="/premium/a"),
    ]
    _stack, port = await auth_stack(start_stack)
    on_arrival = await _bytes_of(port, requests, connect)
    assert slow_way == []  # the two misses were answered later, the rest on arrival
    # Connections opened from now on send everything through aiohttp: same server, same
    # caches (so the misses are hits now).
    monkeypatch.setattr(protocol, "ANSWERS_SUPPORTED", False)
    through_aiohttp = await _bytes_of(port, requests, connect)
    assert len(slow_way) == len(requests)
    for mine, theirs in zip(on_arrival, through_aiohttp, strict=True):
        assert mine.replace(b"X-Paywall-Cache: miss", b"X-Paywall-Cache: hit") == theirs


async def test_pipelined_requests_are_answered_in_order(
    start_stack: StartStack, slow_way: list[str], connect: Callable[[int], Any]
) -> None:
    _stack, client = await cached(start_stack, connect)
    slow_way.clear()
    # cached, a miss (waits for the platform), cached, cached: one write.
    await client.send(
        auth_request() + auth_request(NO_RIGHTS) + auth_request() + auth_request(target="/x")
    )
    answers = [await client.response() for _ in range(4)]
    assert [status_of(answer) for answer in answers] == [200, 403, 200, 404]
    assert b"X-Paywall-Cache: miss" in answers[1]
    assert b"X-Paywall-Cache: hit" in answers[2]
    # The first was answered on arrival; from the miss on, aiohttp's way keeps the order.
    assert slow_way == ["/_paywall/auth", "/_paywall/auth", "/x"]


@pytest.mark.parametrize(
    ("request_bytes", "closes"),
    [
        (auth_request(extra=("Content-Length: 3",)) + b"abc", False),
        (auth_request(extra=("Transfer-Encoding: chunked",)) + b"3\r\nabc\r\n0\r\n\r\n", False),
        (auth_request(extra=("Expect: 100-continue", "Content-Length: 0")), False),
        (auth_request(method="HEAD"), False),
        (auth_request(version="1.0"), True),
        (auth_request(extra=("Connection: close",)), True),
    ],
    ids=["body", "chunked", "expect", "head", "http-1.0", "connection-close"],
)
async def test_what_is_not_offered_goes_aiohttps_way(
    start_stack: StartStack,
    slow_way: list[str],
    connect: Callable[[int], Any],
    request_bytes: bytes,
    closes: bool,
) -> None:
    stack, _ = await cached(start_stack, connect)
    slow_way.clear()
    client = await connect(stack.gateway.port)
    await client.send(request_bytes)
    if b"Expect: 100-continue" in request_bytes:
        assert (await client.response(head_only=True)).startswith(b"HTTP/1.1 100 Continue")
    head_request = request_bytes.startswith(b"HEAD")
    answer = await client.response(head_only=head_request)
    assert status_of(answer) == 200
    assert b"X-Paywall-Cache: hit" in answer
    assert slow_way == ["/_paywall/auth"]
    # A close is waited for generously (a loaded machine); staying open is watched for 0.5 s.
    assert await client.closed(within=5.0 if closes else 0.5) is closes


async def test_keep_alive_timer_moves_on_with_answers_and_closes_an_idle_connection(
    start_stack: StartStack, connect: Callable[[int], Any]
) -> None:
    stack, port = await auth_stack(start_stack)
    server = stack.gateway.runner.server  # type: ignore[union-attr]
    # A second: each pause below leaves 0.7 s of headroom for a loaded machine, and their sum
    # outlasts the timeout, so a timer that did not move on would have closed the connection.
    server._kwargs["keepalive_timeout"] = 1.0  # connections made from now on
    client = await connect(port)
    await client.send(auth_request())
    await client.response()
    for _ in range(5):  # 1.5 s of answers on arrival, each well within the timeout
        await asyncio.sleep(0.3)
        await client.send(auth_request())
        assert b"X-Paywall-Cache: hit" in await client.response()
    assert await client.closed(within=4.0)  # idle: closed after about 1 s


async def test_a_failure_on_arrival_leaves_the_request_to_aiohttps_way(
    start_stack: StartStack,
    slow_way: list[str],
    connect: Callable[[int], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, client = await cached(start_stack, connect)

    def broken(*args: Any) -> bytes:
        raise RuntimeError("a bug")

    # What the connection calls on arrival (the driver's answer_now) fails. Replaced on the
    # connection, not inside the driver: a compiled build (gateway/compiled.py) calls within
    # its modules directly, past any module attribute a test could replace.
    (handler,) = stack.gateway.runner.server.connections  # type: ignore[union-attr]
    monkeypatch.setattr(handler, "_answer_now", broken)
    await client.send(auth_request())
    answer = await client.response()
    assert status_of(answer) == 200  # aiohttp's way answered it, on the same connection
    assert slow_way == ["/_paywall/auth"]


async def test_while_writing_is_paused_requests_go_aiohttps_way(
    start_stack: StartStack, slow_way: list[str], connect: Callable[[int], Any]
) -> None:
    # A client that does not read its answers: once the transport's buffer passes its high
    # water mark it pauses writing, and answers on arrival would pile up past it. aiohttp's
    # way waits for the buffer to drain instead.
    stack, client = await cached(start_stack, connect)
    (handler,) = stack.gateway.runner.server.connections  # type: ignore[union-attr]
    handler.pause_writing()  # what the transport does at its high water mark
    slow_way.clear()
    await client.send(auth_request())

    async def taken() -> bool:
        return bool(slow_way)

    await eventually(taken, within=5.0)  # polled: a fixed pause may be too short under load
    assert slow_way == ["/_paywall/auth"]
    handler.resume_writing()
    assert b"X-Paywall-Cache: hit" in await client.response()
    await asyncio.sleep(0.1)  # aiohttp's request loop parks again once it is done with it
    await client.send(auth_request())  # writing again: on arrival again
    assert b"X-Paywall-Cache: hit" in await client.response()
    assert slow_way == ["/_paywall/auth"]


async def test_a_read_that_fills_the_parsers_queue_is_left_to_aiohttp(
    start_stack: StartStack, slow_way: list[str], connect: Callable[[int], Any]
) -> None:
    # aiohttp's parser stops after a queue's worth of requests in one read and aiohttp
    # re-drives it; every request of such a burst is answered, in order, on one connection.
    stack, client = await cached(start_stack, connect)
    count = 2_000
    await client.send(b"".join(auth_request(uri=f"/premium/{n}") for n in range(count)))
    async with asyncio.timeout(60):
        answers = [await client.response() for _ in range(count)]
    assert all(b"X-Paywall-Access: granted" in answer for answer in answers)
    assert (
        stack.metrics.value(
            "paywall_requests_total", {"mode": "auth_request", "outcome": "granted"}
        )
        == count + 1
    )


@pytest.mark.parametrize(
    "header",
    [
        ("X-A", "a\r\nSet-Cookie: x=1"),
        ("X-A", "a\nb"),
        ("X-A", "a\rb"),
        ("X-A\r\nX-B", "b"),
        ("X-A", "a\x00"),
        ("X-A", "a\x1b"),
        ("X-A", "a\x7f"),
    ],
)
def test_reply_bytes_refuses_what_aiohttp_refuses(header: tuple[str, str]) -> None:
    # aiohttp's writer refuses them as "Forbidden control character" (a 500 instead).
    with pytest.raises(ValueError, match="control character"):
        reply_bytes(Reply(200, [header]))


@pytest.mark.parametrize("value", ["a\tb", "caf\u00e9", "a\x85b", "a\u2028b", "\t\xa0"])
def test_reply_bytes_keeps_what_aiohttp_writes(value: str) -> None:
    # Not all printable (a tab, NEL, a line separator), but no control character aiohttp
    # refuses: written as given, in the name too.
    data = reply_bytes(Reply(200, [("X-A", value), (f"X-{value}", "b")]))
    assert f"X-A: {value}\r\nX-{value}: b\r\n".encode() in data


def test_header_names_found_printable_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name once found printable is looked up, not scanned, next time; past the memo's bound
    names are scanned every time, and a name with a control character is refused however
    many names came before it."""
    monkeypatch.setattr(responses, "_PRINTABLE_NAMES", set())  # (whatever other tests left)
    for i in range(300):  # more than the memo keeps
        reply_bytes(Reply(200, [(f"X-Name-{i}", "v")]))
    assert 0 < len(responses._PRINTABLE_NAMES) <= responses._MAX_NAMES
    assert "X-Name-0" in responses._PRINTABLE_NAMES
    for name in ("X-Name-0", "X-Name-299"):
        assert f"{name}: v\r\n".encode() in reply_bytes(Reply(200, [(name, "v")]))
        with pytest.raises(ValueError, match="control character"):
            reply_bytes(Reply(200, [(f"{name}\x01", "v")]))
        with pytest.raises(ValueError, match="control character"):
            reply_bytes(Reply(200, [(name, "v\n")]))


def test_reply_bytes_keeps_a_tab_and_adds_aiohttps_headers() -> None:
    data = reply_bytes(Reply(200, [("X-A", "a\tb")], b"xyz"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[:4] == [
        b"HTTP/1.1 200 OK",
        b"X-A: a\tb",
        b"Content-Type: application/octet-stream",
        b"Content-Length: 3",
    ]
    assert body == b"xyz"


async def test_a_note_on_a_declined_request_reaches_that_requests_handler_once(
    connect: Callable[[int], Any],
) -> None:
    """An answerer that declines may leave a note (the driver: how it routed the request); the
    handler of that request gets it, once, and no other request of the connection does."""
    seen: list[tuple[str, object, object]] = []

    def answerer(method: str, target: str, *_: Any) -> object:
        return ("noted", method, target) if target.startswith("/noted") else None

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(
            (request.raw_path, protocol.arrival_note(request), protocol.arrival_note(request))
        )
        return web.Response(text="ok")

    runner, port = await answering_server(answerer, handler)
    try:
        client = await connect(port)

        def get(target: str) -> bytes:
            return f"GET {target} HTTP/1.1\r\nHost: news.example\r\n\r\n".encode()

        for target in ("/noted/1", "/plain"):
            await client.send(get(target))
            assert status_of(await client.response()) == 200
        # Pipelined: only the leading request is offered on arrival, so only it has a note.
        await client.send(get("/noted/2") + get("/noted/3"))
        for _ in range(2):
            assert status_of(await client.response()) == 200
    finally:
        await runner.cleanup()
    assert seen == [
        ("/noted/1", ("noted", "GET", "/noted/1"), None),
        ("/plain", None, None),
        ("/noted/2", ("noted", "GET", "/noted/2"), None),
        ("/noted/3", None, None),
    ]


def test_reply_bytes_of_replies_that_differ_in_one_value() -> None:
    # An equal reply gets the same bytes, one that differs in its status, a header or having
    # a body its own, and a refused header is refused every time.
    grant = [("X-Paywall-Access", "granted"), ("X-Paywall-Customer-Id", "100001")]
    first = reply_bytes(Reply(200, list(grant)))
    assert reply_bytes(Reply(200, list(grant))) == first
    assert b"X-Paywall-Customer-Id: 100001\r\n" in first
    other = reply_bytes(Reply(200, [grant[0], ("X-Paywall-Customer-Id", "100002")]))
    assert b"X-Paywall-Customer-Id: 100002\r\n" in other
    assert b"100001" not in other
    assert reply_bytes(Reply(403, list(grant))).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    with_body = reply_bytes(Reply(200, list(grant), b"x"))
    assert b"Content-Type: application/octet-stream\r\n" in with_body
    assert b"Content-Type" not in reply_bytes(Reply(200, list(grant)))
    for _ in range(2):
        with pytest.raises(ValueError, match="control character"):
            reply_bytes(Reply(200, [("X-A", "a\r\nSet-Cookie: x=1")]))


# Header text made of what matters to the check: ordinary characters, tab, CR, LF, the other
# C0 controls, DEL, NEL, a line separator, non-ASCII.
_PART = st.text(
    alphabet=st.sampled_from("aZ0-: \t\r\n\x00\x01\x0b\x1b\x1f\x7f\x85\u2028\xe9\u6f22"),
    max_size=6,
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(_PART, _PART), max_size=4))
def test_reply_bytes_refuses_exactly_what_aiohttp_refuses(headers: list[tuple[str, str]]) -> None:
    # aiohttp refuses a name or value with a control character but tab (CR and LF included);
    # the whole block is checked at once, and must refuse exactly those.
    refused = any(
        re.search(r"[\x00-\x08\x0a-\x1f\x7f]", part) for header in headers for part in header
    )
    if refused:
        with pytest.raises(ValueError, match="control character"):
            reply_bytes(Reply(200, headers))
    else:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        assert reply_bytes(Reply(200, headers)).startswith(f"HTTP/1.1 200 OK\r\n{lines}".encode())
