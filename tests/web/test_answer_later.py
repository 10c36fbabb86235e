"""Answers made on arrival that need awaiting (gateway.web.protocol's ``Later``): the connection
is busy until the answer is sent, what the client sends meanwhile is answered after it, in
order, and a shutdown, a client that goes away or an answer that fails each end the way
aiohttp's own request handling would. Raw sockets and an app of the test's own, whose
answers wait for the test to release them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from gateway.web import protocol
from gateway.web.protocol import Later
from tests.web.test_answer_now import Connection, answering_server, status_of


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: news.example", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply(text: str) -> bytes:
    body = text.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


@dataclass
class App:
    """``/later/...`` is answered later, once the test releases it (``gates``); ``/now/...``
    on arrival; anything else by the handler (aiohttp's way, ``handled``)."""

    port: int
    runner: protocol.GatewayRunner
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    starts: dict[str, asyncio.Event] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)  # the Later answers started, in order
    handled: list[tuple[str, object]] = field(default_factory=list)  # (target, its note)
    fail: bool = False

    def gate(self, target: str) -> asyncio.Event:
        return self.gates.setdefault(target, asyncio.Event())

    def begun(self, target: str) -> asyncio.Event:
        return self.starts.setdefault(target, asyncio.Event())

    async def started(self, target: str) -> None:
        async with asyncio.timeout(5):
            await self.begun(target).wait()


@pytest.fixture(params=["coroutine", "future"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[App]:
    """Each test runs twice: with answers that are coroutines (the connection runs each as a
    task) and with answers that are futures, set by whoever makes them (waited for by a
    callback: how the gateway's driver answers)."""
    state: App
    settled: set[asyncio.Task[None]] = set()

    def answerer(method: str, target: str, *_: Any) -> object:
        if target.startswith("/now/"):
            return reply(f"now {target}")
        if target.startswith("/broken/"):

            def broken() -> Awaitable[bytes]:
                raise RuntimeError("a bug")

            return Later(("noted", target), broken)
        if not target.startswith("/later/"):
            return None

        async def answer() -> bytes:
            state.asked.append(target)
            state.begun(target).set()
            await state.gate(target).wait()
            if state.fail:
                raise RuntimeError("a bug")
            return reply(f"later {target}")

        if request.param == "coroutine":
            return Later(("noted", target), answer)

        def answer_future() -> asyncio.Future[bytes]:
            made: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

            async def settle() -> None:
                try:
                    made.set_result(await answer())
                except Exception as exc:
                    made.set_exception(exc)

            task = asyncio.get_running_loop().create_task(settle())
            settled.add(task)
            task.add_done_callback(settled.discard)
            return made

        return Later(("noted", target), answer_future)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        state.handled.append((request.raw_path, protocol.arrival_note(request)))
        return web.Response(text=f"handled {request.raw_path}")

    runner, port = await answering_server(answerer, handler)
    state = App(port, runner)
    try:
        yield state
    finally:
        for gate in state.gates.values():
            gate.set()
        await runner.cleanup()


@pytest.fixture
async def connect(app: App) -> AsyncIterator[Callable[[], Awaitable[Connection]]]:
    opened: list[asyncio.StreamWriter] = []

    async def open_connection() -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        opened.append(writer)
        return Connection(reader, writer)

    yield open_connection
    for writer in opened:
        writer.close()


async def waiting(app: App, connect: Callable[[], Awaitable[Connection]]) -> Connection:
    """A connection whose request ``/later/1`` is being answered later (not released yet)."""
    client = await connect()
    await client.send(get("/later/1"))
    await app.started("/later/1")
    return client


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


async def nothing_yet(client: Connection) -> bool:
    try:
        async with asyncio.timeout(0.2):
            await client.reader.read(1)
    except TimeoutError:
        return True
    return False


async def test_requests_sent_meanwhile_are_answered_after_it_in_order(
    app: App, connect: Callable[[], Awaitable[Connection]]
) -> None:
    client = await waiting(app, connect)
    # Each of these alone would be answered at once (on arrival, later, aiohttp's way).
    await client.send(get("/now/2"))
    await client.send(get("/later/3") + get("/other/4"))
    await client.send(get("/now/5"))
    assert await nothing_yet(client)
    assert app.asked == ["/later/1"]  # nothing was parsed meanwhile
    app.gate("/later/1").set()
    app.gate("/later/3").set()
    bodies = [body_of(await client.response()) for _ in range(5)]
    assert bodies == [
        b"later /later/1",
        b"now /now/2",
        # What came meanwhile is parsed as one read: /later/3 is not its last request, so it
        # goes aiohttp's way (with its note), and so does everything after it.
        b"handled /later/3",
        b"handled /other/4",
        b"handled /now/5",
    ]
    assert app.asked == ["/later/1"]
    assert app.handled == [
        ("/later/3", ("noted", "/later/3")),
        ("/other/4", None),
        ("/now/5", None),
    ]
    # The connection is as before: the next request alone in its read is answered later.
    await client.send(get("/later/6"))
    app.gate("/later/6").set()
    assert body_of(await client.response()) == b"later /later/6"


async def test_a_client_that_keeps_sending_is_read_no_further(
    app: App, connect: Callable[[], Awaitable[Connection]]
) -> None:
    client = await waiting(app, connect)
    (handler,) = app.runner.server.connections  # type: ignore[union-attr]
    flood = get("/now/x") * 8_000  # about 360 kB: more than one read
    client.writer.write(flood)
    await asyncio.sleep(0.3)
    held = handler._held
    assert held is not None
    assert 0 < len(held) < len(flood)  # one read is held, the rest waits in the socket
    app.gate("/later/1").set()
    assert body_of(await client.response()) == b"later /later/1"
    # Every one answered (on arrival, or aiohttp's way for reads that fill its queue): count
    # the status lines as they come, a chunk at a time (a line may span two chunks).
    answered, carry = 0, b""
    async with asyncio.timeout(30):
        while answered < 8_000:
            chunk = await client.reader.read(1 << 16)
            assert chunk, f"closed after {answered} answers"
            data = carry + chunk
            answered += data.count(b"HTTP/1.1 200 OK\r\n")
            carry = data[-16:]  # too short to hold a whole status line: none counted twice
    assert answered == 8_000


async def failed_with_500(client: Connection, caplog: pytest.LogCaptureFixture) -> None:
    """The answer that failed: a 500, the connection closed, one error logged."""
    answer = await client.response()
    assert status_of(answer) == 500
    assert b"Connection: close\r\n" in answer
    assert await client.closed()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["Error answering a request"]


async def test_an_answer_that_fails_is_a_500_and_the_connection_closes(
    app: App, connect: Callable[[], Awaitable[Connection]], caplog: pytest.LogCaptureFixture
) -> None:
    app.fail = True
    client = await waiting(app, connect)
    app.gate("/later/1").set()
    await failed_with_500(client, caplog)


async def test_an_answer_that_cannot_even_start_is_a_500_and_the_connection_closes(
    app: App, connect: Callable[[], Awaitable[Connection]], caplog: pytest.LogCaptureFixture
) -> None:
    client = await connect()
    await client.send(get("/broken/1"))
    await failed_with_500(client, caplog)
    # The server goes on: another connection is answered.
    other = await connect()
    await other.send(get("/now/3"))
    assert body_of(await other.response()) == b"now /now/3"


async def test_a_client_that_goes_away_meanwhile_gets_nothing_and_nothing_fails(
    app: App, connect: Callable[[], Awaitable[Connection]], caplog: pytest.LogCaptureFixture
) -> None:
    client = await waiting(app, connect)
    client.writer.close()
    await asyncio.sleep(0.1)
    app.gate("/later/1").set()
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The server goes on: another connection is answered.
    other = await connect()
    await other.send(get("/now/2"))
    assert body_of(await other.response()) == b"now /now/2"


async def test_a_graceful_shutdown_sends_it_first(
    app: App, connect: Callable[[], Awaitable[Connection]]
) -> None:
    client = await waiting(app, connect)
    cleanup = asyncio.create_task(app.runner.cleanup())
    await asyncio.sleep(0.3)
    assert not cleanup.done()  # waiting for the answer, as for a request in progress
    app.gate("/later/1").set()
    assert body_of(await client.response()) == b"later /later/1"
    async with asyncio.timeout(5):
        await cleanup
    assert await client.closed()


async def test_the_keep_alive_timer_waits_for_it_then_closes_an_idle_connection(
    app: App, connect: Callable[[], Awaitable[Connection]]
) -> None:
    server = app.runner.server
    assert server is not None
    server._kwargs["keepalive_timeout"] = 0.3  # connections made from now on
    client = await waiting(app, connect)
    await asyncio.sleep(0.8)  # well past the timeout: the connection is busy, not idle
    app.gate("/later/1").set()
    assert body_of(await client.response()) == b"later /later/1"
    assert await client.closed(within=2.0)  # idle after it: closed after about 0.3 s


@pytest.fixture
def between(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Bytes fed to the connection the moment aiohttp's handling of a request has written its
    answer, before aiohttp's request loop is back waiting for the next one: what a busy
    server reads from a client that answers quickly (the loop's return is a step of its own).
    One entry per request handled aiohttp's way, in order."""
    pending: list[bytes] = []
    served = protocol._RequestHandler._served

    async def then_more(self: protocol._RequestHandler, handling: Awaitable[Any]) -> Any:
        try:
            return await served(self, handling)
        finally:
            if pending:
                self.data_received(pending.pop(0))

    monkeypatch.setattr(protocol._RequestHandler, "_served", then_more)
    return pending


async def test_a_request_read_while_aiohttps_loop_returns_is_answered_on_arrival(
    app: App, connect: Callable[[], Awaitable[Connection]], between: list[bytes]
) -> None:
    # Waiting for aiohttp's loop to park would keep every later request of a busy connection
    # on aiohttp's way, each costing a request object and a task.
    between.append(get("/now/2"))
    client = await connect()
    await client.send(get("/slow/1"))
    assert body_of(await client.response()) == b"handled /slow/1"
    assert body_of(await client.response()) == b"now /now/2"
    await client.send(get("/now/3"))
    assert body_of(await client.response()) == b"now /now/3"
    assert [target for target, _ in app.handled] == ["/slow/1"]


async def test_a_later_taken_while_aiohttps_loop_returns_outlasts_the_keep_alive_timer(
    app: App, connect: Callable[[], Awaitable[Connection]], between: list[bytes]
) -> None:
    # aiohttp's loop sets the keep-alive timer after the request it handled; that timer closes
    # a connection whose loop waits, which it does while a Later is answered.
    server = app.runner.server
    assert server is not None
    server._kwargs["keepalive_timeout"] = 0.3  # connections made from now on
    between.append(get("/later/2"))
    client = await connect()
    await client.send(get("/slow/1"))
    assert body_of(await client.response()) == b"handled /slow/1"
    await app.started("/later/2")
    await asyncio.sleep(0.8)  # well past the timeout: the connection is busy, not idle
    app.gate("/later/2").set()
    assert body_of(await client.response()) == b"later /later/2"
    assert await client.closed(within=2.0)  # idle after it: closed after about 0.3 s


async def test_a_request_read_before_aiohttps_handling_starts_waits_its_turn(
    app: App, connect: Callable[[], Awaitable[Connection]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp's loop has taken /slow/1 (its handling is a task that has not run yet) when
    # /now/2 is read: answering /now/2 on arrival would send it first.
    handle_request = protocol._RequestHandler._handle_request
    fed: list[bytes] = [get("/now/2")]

    def taking(self: protocol._RequestHandler, *args: Any) -> Any:
        handling = handle_request(self, *args)
        if fed:
            self.data_received(fed.pop())
        return handling

    monkeypatch.setattr(protocol._RequestHandler, "_handle_request", taking)
    client = await connect()
    await client.send(get("/slow/1"))
    assert body_of(await client.response()) == b"handled /slow/1"
    assert body_of(await client.response()) == b"handled /now/2"
    assert [target for target, _ in app.handled] == ["/slow/1", "/now/2"]
