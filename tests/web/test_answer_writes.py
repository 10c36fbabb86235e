"""Answers made on arrival are written after the loop's round of reads (gateway.web.protocol,
"Writes after the reads"): together, in order, and before anything else that writes to or
closes the connection."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.web import protocol


class Transport(asyncio.Transport):
    """What the connection writes, in order; closed when told."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        assert not self.closed, "written after it was closed"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def answer(name: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(name), name.encode())


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()


def connections(count: int) -> list[tuple[Any, Transport]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"aiohttp {request.path}")

    def answer_now(method: str, target: str, *_: Any) -> bytes:
        return answer(target)

    server = protocol._Server(handler, answer_now=answer_now)
    made = []
    for _ in range(count):
        connection, transport = server(), Transport()
        connection.connection_made(transport)
        made.append((connection, transport))
    return made


async def test_a_rounds_answers_are_written_after_its_reads_one_write_per_connection() -> None:
    (a, ta), (b, tb) = connections(2)
    a.data_received(get("/1") + get("/2"))  # pipelined: both answered on arrival
    b.data_received(get("/3"))
    a.data_received(get("/4"))  # another read of the same round
    assert ta.writes == tb.writes == []  # not yet: the round's reads come first
    await asyncio.sleep(0)
    assert ta.writes == [answer("/1") + answer("/2") + answer("/4")]
    assert tb.writes == [answer("/3")]
    a.data_received(get("/5"))  # the next round
    await asyncio.sleep(0)
    assert ta.writes[1:] == [answer("/5")]
    assert asyncio.get_running_loop() not in protocol._UNSENT  # nothing left behind


async def test_an_answer_before_one_that_goes_aiohttps_way_is_written_first() -> None:
    ((a, ta),) = connections(1)
    a.data_received(get("/1") + get("/2", "HEAD"))  # HEAD is left to aiohttp
    for _ in range(20):
        await asyncio.sleep(0)
        if len(ta.writes) >= 2:
            break
    assert ta.writes[0] == answer("/1")
    # aiohttp's answer to the HEAD (its head: "aiohttp /2" is 10 bytes), after it.
    assert ta.writes[1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 10\r\n" in ta.writes[1]


async def test_a_forced_close_writes_what_waits_first_and_a_gone_client_gets_nothing() -> None:
    (a, ta), (b, tb) = connections(2)
    a.data_received(get("/1"))
    b.data_received(get("/2"))
    a.force_close()  # e.g. aiohttp's keep-alive or an error: the answer goes out before
    assert (ta.writes, ta.closed) == ([answer("/1")], True)
    tb.close()  # the client went away before the round ended
    await asyncio.sleep(0)
    assert tb.writes == []
    assert asyncio.get_running_loop() not in protocol._UNSENT


def later(connection: Any) -> asyncio.Future[bytes]:
    """``connection`` answering a request Later, by a future the test sets."""
    made: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    connection._answer_later(protocol.Later(None, lambda: made))
    return made


async def test_later_answers_of_one_round_are_written_after_it_with_what_came_meanwhile() -> None:
    (a, ta), (b, tb) = connections(2)
    first, second = later(a), later(b)
    a.data_received(get("/3"))  # held while /1 is answered, then answered on arrival
    first.set_result(answer("/1"))
    second.set_result(answer("/2"))  # delivered in the same round, as one Redis batch's
    await asyncio.sleep(0)  # the round that runs the futures' callbacks
    assert ta.writes == tb.writes == []
    await asyncio.sleep(0)
    assert ta.writes == [answer("/1") + answer("/3")]  # in order, one write
    assert tb.writes == [answer("/2")]
    assert asyncio.get_running_loop() not in protocol._UNSENT
