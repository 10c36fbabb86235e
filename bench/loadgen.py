"""A small HTTP/1.1 load generator for what wrk cannot do: a fixed number of requests, a fixed
request rate (open loop), and a check of every answer.

wrk runs for a duration at whatever rate the server allows (closed loop) and has no clock in
its Lua scripts, so it cannot hold a rate; its Lua ``response()`` hook, which could check each
answer, slows it down a lot. This generator is plain asyncio on raw keep-alive connections
(uvloop when installed): a few microseconds of its own per request, so on one core it keeps
well ahead of the servers measured here (it is measured against the bare handler too, and says
so when it fell behind its schedule).

* :func:`closed_loop`: ``connections`` connections, each sending the next request of a shared
  sequence as soon as its previous answer arrived, until the sequence or ``max_seconds`` ends.
  Latency: from sending to the end of the answer.
* :func:`open_loop`: one request every ``1 / rate`` seconds for ``seconds`` seconds, each on a
  free connection of a pool of ``connections`` (or, when none is free, the next to get free).
  Latency is counted from when the request was due, not when a connection got free to send
  it, so a server that falls behind shows it in the percentiles instead of silently slowing
  the schedule down ("coordinated omission"), and it ends when the answer's last byte is read.
  The scheduler wakes once a millisecond (the loop's timer resolution; a shorter sleep would
  spin and take a core from the server) and sends what is due; how late it woke is its own
  lag, not the server's, and is reported apart (``behind``, the worst lag). It runs on
  protocol callbacks alone, with no task, future or timer per request, so less of the tail it
  reports is its own (at 500 requests a second against a small test server: p99 0.44 ms, the
  earlier version with those 6.3 ms). At `make bench` row 7's rate (10,000 a second and more)
  it still shares the machine's two cores with the server measured.

Requests are prebuilt bytes (:func:`get_request`); an answer passes if its status is 2xx and
its head contains the request's ``expect`` bytes (e.g. ``b"X-Paywall-Access: granted"``). Only
``Content-Length`` and chunked bodies are understood, which is what the servers here send.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")
ANSWER_TIMEOUT = 30.0  # seconds one answer may take before it counts as failed
TICK = 0.001  # open loop: the scheduler wakes at most once a millisecond

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


def get_request(host: str, target: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The bytes of ``GET target`` with ``headers`` (Host is added)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Job:
    """One request to send and the bytes its answer's head must contain (b"" = any)."""

    request: bytes
    expect: bytes = b""


@dataclass
class LoadResult:
    requests: int  # answers received (passed or not)
    seconds: float
    latencies: list[float] = field(repr=False)  # seconds, one per answer
    failures: Counter[str]
    behind: float = 0.0  # open loop: the scheduler's worst lag behind the schedule, seconds

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The ``p`` th percentile of the latencies in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
        return ordered[rank - 1] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p90_ms": round(self.percentile(90), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 3),
            "failures": dict(self.failures),
            "behind_s": round(self.behind, 3),
        }


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`exchange` sends a request and returns the answer's
    head once the whole answer arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed mid-answer"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        head = _complete_answer(self.buffer)
        if head is not None:
            self.waiter.set_result(head)

    async def exchange(self, request: bytes) -> bytes:
        """The answer's head; TimeoutError after ``ANSWER_TIMEOUT`` seconds (a timer, not
        asyncio.wait_for: that would cost a task per request)."""
        if self.transport is None or self.closed:
            raise ConnectionError("connection closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(ANSWER_TIMEOUT, _expire, waiter)
        self.transport.write(request)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer in time"))


def _complete_answer(buffer: bytearray) -> bytes | None:
    """The head of the first answer in ``buffer`` if it is complete (and removes it)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    body_start = end + 4
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        stop = body_start + int(length.group(1))
    elif _CHUNKED.search(head):
        last = buffer.find(b"\r\n0\r\n\r\n", body_start - 2)
        if last < 0:
            return None
        stop = last + 7
    elif head[9:12] in (b"204", b"304") or head[9:10] == b"1":
        stop = body_start
    else:
        raise ValueError("an answer without Content-Length or chunked body")
    if len(buffer) < stop:
        return None
    del buffer[:stop]
    return head


class _Client:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, self.host, self.port)
        return protocol

    async def one(self, connection: _Connection, job: Job, started: float) -> _Connection:
        """Send ``job`` on ``connection`` (a new one if it was closed); record the answer."""
        try:
            if connection.closed:
                connection = await self.connect()
            head = await connection.exchange(job.request)
        except (OSError, TimeoutError, ValueError) as exc:
            self.failures[type(exc).__name__] += 1
            if connection.transport is not None:
                connection.transport.abort()
            connection.closed = True
            return connection
        self.latencies.append(time.perf_counter() - started)
        _check(self.failures, job, head)
        if _CLOSE.search(head):
            connection.closed = True
            if connection.transport is not None:
                connection.transport.close()
        return connection


async def closed_loop_async(
    host: str,
    port: int,
    jobs: Sequence[Job],
    connections: int,
    max_seconds: float,
) -> LoadResult:
    client = _Client(host, port)
    pool = [await client.connect() for _ in range(connections)]
    pending = iter(jobs)
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(connection: _Connection) -> None:
        for job in pending:  # the shared iterator hands each job to one worker
            now = time.perf_counter()
            if now > deadline:
                return
            connection = await client.one(connection, job, now)
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker(c) for c in pool))
    seconds = time.perf_counter() - started
    return LoadResult(len(client.latencies), seconds, client.latencies, client.failures)


class _Paced(asyncio.Protocol):
    """One keep-alive connection of :func:`open_loop_async`: at most one request in flight,
    driven by callbacks alone (no task, future or timer per request, which cost the generator
    more than the servers it measures spend on a cached answer)."""

    def __init__(self, run: _OpenLoop) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.job: Job | None = None  # the request in flight
        self.started = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.job is not None:
            self.run.failed(self, "ConnectionError")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.job is None:
            return
        try:
            head = _complete_answer(self.buffer)
        except ValueError:
            self.run.failed(self, "ValueError")
            return
        if head is not None:
            self.run.answered(self, head)

    def send(self, job: Job, started: float) -> None:
        self.job, self.started = job, started
        assert self.transport is not None
        self.transport.write(job.request)


class _OpenLoop:
    """The pool, the backlog of requests waiting for a free connection, and the results."""

    def __init__(self, client: _Client, total: int) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.total = total
        self.scheduled = 0
        self.finished = 0  # answered or failed
        self.idle: list[_Paced] = []
        self.busy: set[_Paced] = set()
        self.backlog: deque[tuple[float, Job]] = deque()
        self.done: asyncio.Future[None] = self.loop.create_future()

    async def connect(self) -> _Paced:
        _, protocol = await self.loop.create_connection(
            lambda: _Paced(self), self.client.host, self.client.port
        )
        return protocol

    def submit(self, started: float, job: Job) -> None:
        self.scheduled += 1
        if self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(job, started)
        else:
            self.backlog.append((started, job))

    def answered(self, connection: _Paced, head: bytes) -> None:
        self.client.latencies.append(time.perf_counter() - connection.started)
        job = connection.job
        assert job is not None
        connection.job = None
        self.finished += 1
        _check(self.client.failures, job, head)
        if _CLOSE.search(head):
            self._lost(connection, close=True)
        else:
            self._free(connection)

    def failed(self, connection: _Paced, reason: str) -> None:
        if connection.job is None:
            return
        connection.job = None
        self.finished += 1
        self.client.failures[reason] += 1
        self._lost(connection, close=False)

    def expire(self) -> None:
        """Fail what waited longer than ``ANSWER_TIMEOUT`` (checked ten times a second)."""
        oldest = time.perf_counter() - ANSWER_TIMEOUT
        for connection in [c for c in self.busy if c.job is not None and c.started < oldest]:
            self.failed(connection, "TimeoutError")
        if not self.done.done():
            self.loop.call_later(0.1, self.expire)

    def _free(self, connection: _Paced) -> None:
        if self.backlog:
            started, job = self.backlog.popleft()
            connection.send(job, started)
            return
        self.busy.discard(connection)
        self.idle.append(connection)
        if self.finished == self.total and not self.done.done():
            self.done.set_result(None)

    def _lost(self, connection: _Paced, *, close: bool) -> None:
        self.busy.discard(connection)
        connection.closed = True
        if connection.transport is not None:
            if close:
                connection.transport.close()
            else:
                connection.transport.abort()
        self.loop.create_task(self._replace())

    async def _replace(self) -> None:
        try:
            connection = await self.connect()
        except OSError:
            self.client.failures["ConnectionError"] += 1
            if self.finished == self.total and not self.done.done():
                self.done.set_result(None)
            return
        self.busy.add(connection)
        self._free(connection)


def _check(failures: Counter[str], job: Job, head: bytes) -> None:
    status = head[9:12]
    if not status.startswith(b"2"):
        failures[f"status {status.decode(errors='replace')}"] += 1
    elif job.expect and job.expect not in head:
        failures[f"2xx without {job.expect.decode(errors='replace')}"] += 1


async def open_loop_async(
    host: str,
    port: int,
    jobs: Sequence[Job],
    rate: float,
    seconds: float,
    connections: int,
) -> LoadResult:
    client = _Client(host, port)
    total = int(rate * seconds)
    run = _OpenLoop(client, total)
    run.idle = [await run.connect() for _ in range(connections)]
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    lags: list[float] = []
    run.expire()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        if start + sent * interval <= now:
            # The scheduler's own lag (the loop's timer tick): not the server's latency, so
            # the clock of these requests starts now; reported apart as ``behind``.
            lags.append(now - (start + sent * interval))
        while sent < total and start + sent * interval <= now:
            run.submit(now, jobs[sent % len(jobs)])
            sent += 1
        if sent < total:
            # At least one tick: the loop's timers have millisecond resolution, and a shorter
            # sleep would spin, taking a core from the server under test.
            await asyncio.sleep(max(TICK, start + sent * interval - time.perf_counter()))
    if total:
        await run.done
    elapsed = time.perf_counter() - start
    for connection in [*run.idle, *run.busy]:
        if connection.transport is not None:
            connection.transport.close()
    result = LoadResult(len(client.latencies), elapsed, client.latencies, client.failures)
    result.behind = max(lags, default=0.0)
    return result


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def closed_loop(
    host: str, port: int, jobs: Sequence[Job], connections: int, max_seconds: float
) -> LoadResult:
    return run(lambda: closed_loop_async(host, port, jobs, connections, max_seconds))


def open_loop(
    host: str, port: int, jobs: Sequence[Job], rate: float, seconds: float, connections: int = 64
) -> LoadResult:
    """``rate`` requests a second for ``seconds`` seconds, request i being ``jobs[i % n]``."""
    return run(lambda: open_loop_async(host, port, jobs, rate, seconds, connections))
