"""The access log: the very lines JsonFormatter made, written in batches off the request path,
bounded, thread- and fork-safe, and complete at close and at exit."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway import access_lines, access_log
from gateway.access_lines import LineFormatter
from gateway.access_log import AccessLog
from gateway.asgi import PaywallMiddleware
from gateway.config import Settings
from gateway.http.forwarded import TrustedProxies
from gateway.http.observe import Observer
from gateway.http.request import RequestView
from gateway.http.steps import Record
from gateway.logs import JsonFormatter, Redactor
from gateway.metrics import Metrics
from tests.conftest import REPO_ROOT

T = 1_764_633_600.123456  # 2025-12-02T00:00:00.123Z
FIELDS = ("method", "path", "status", "verdict", "reason", "cache", "customer_id", "client")


def redactor() -> Redactor:
    return Redactor(secret_cookie="sid_custom", secret_params=["tt"])


def old_line(
    formatter: JsonFormatter, created: float, values: tuple[Any, ...], duration: float
) -> str:
    """What ``logging.getLogger("gateway.access").info("request", extra={"fields": …})`` wrote
    through JsonFormatter before the access log had a writer of its own."""
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", None, None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    fields = dict(zip(FIELDS, values, strict=True))
    fields["duration_ms"] = round(duration * 1000, 3)
    record.fields = fields
    return formatter.format(record)


def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds (a loaded machine may
    start or schedule the writer thread late, so no fixed pause is long enough)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        time.sleep(0.01)


def written(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(access_lines, "wall_clock", lambda: T)
    return T


# --- the same lines as JsonFormatter ----------------------------------------------------------

GRANTED = ("GET", "/premium/article", 200, "granted", "subscriber", "hit", "100001", "127.0.0.1")
LINES = [
    pytest.param(GRANTED, 0.0012345, id="cached-grant"),
    pytest.param(
        ("HEAD", "/", 303, "public", "public", "none", None, "2001:db8::1"), 0.5, id="ipv6-null"
    ),
    pytest.param(
        ("GET", "/a/transferToken=abc", 200, "public", "public", "none", None, "10.0.0.1"),
        0.001,
        id="token-in-path",
    ),
    pytest.param(
        ("GET", "/a/tt=abc;sid_custom=def", 200, "public", "public", "none", None, "10.0.0.1"),
        0.001,
        id="configured-names-in-path",
    ),
    pytest.param(
        ("GET", "/a/transfer%54oken%3Dabc", 200, "public", "public", "none", None, "10.0.0.1"),
        0.001,
        id="encoded-token-in-path",
    ),
    pytest.param(
        ("POST", "/_paywall/callbacks/SECRET", 202, "ok", "ok", "none", None, "unknown"),
        0.02,
        id="callback-secret",
    ),
    pytest.param(
        ("GET", '/q"\\\x00\x1f\x7f\n\u2028', 400, "bad_request", 'a "b"', "none", None, "::1"),
        12.0,
        id="control-chars-and-quotes",
    ),
    pytest.param(
        ("GET", "/caf\u00e9/\u6f22/\U0001f600", 200, "public", "public", "none", None, "::1"),
        1e-9,
        id="non-ascii",
    ),
    pytest.param(
        ("token=x", "/a", 405, "bad_request", "Authorization: Bearer abc", "n", "x", "y z"),
        0.0,
        id="secrets-in-other-fields",
    ),
    pytest.param(
        ("GET", "/a", HTTPStatus.OK, "granted", "r", "stale", "\uff11\uff12", "unknown"),
        3.0,
        id="int-enum-status-and-non-ascii-digits",
    ),
    pytest.param(
        ("GET", "/a", 200, "granted", "r", "miss", "42", "127.0.0.1"),
        math.inf,
        id="infinite-duration",
    ),
]


@pytest.mark.parametrize(("values", "duration"), LINES)
@pytest.mark.parametrize("created", [T, 1_764_633_600.9999, 1_764_633_601.0])
def test_lines_are_the_ones_jsonformatter_wrote(
    monkeypatch: pytest.MonkeyPatch, values: tuple[Any, ...], duration: float, created: float
) -> None:
    monkeypatch.setattr(access_lines, "wall_clock", lambda: created)
    redact = redactor()
    stream = io.StringIO()
    writer = AccessLog(redact, stream)
    try:
        for _ in range(2):  # the second time from the remembered encodings
            writer.log(*values, duration)
        assert writer.flush()
    finally:
        writer.close()
    expected = old_line(JsonFormatter(redact), created, values, duration)
    assert written(stream) == [expected, expected]
    assert "abc" not in stream.getvalue()
    assert "SECRET" not in stream.getvalue()


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=False),  # any size, inf, -0.0, subnormals
        st.floats(min_value=-1e10, max_value=1e10),  # the plain range's edge
        st.integers(0, 10**9).map(lambda n: n / 1e6),  # microseconds, as a clock gives them
        st.integers(-(10**7), 10**7).map(lambda n: n / 2**14),  # exact binary ties
        st.integers(),
    )
)
def test_any_duration_is_written_as_jsonformatter_wrote_it(seconds: float) -> None:
    formatter = LineFormatter(redactor())
    line = formatter.line((T, *GRANTED, seconds))
    assert line == old_line(JsonFormatter(redactor()), T, GRANTED, seconds) + "\n"


@pytest.mark.parametrize("millis", [0.0625, 0.1875, 1.0625, 2.5625, 1023.9375, 7.0005])
def test_a_duration_halfway_between_two_thousandths_is_written_as_before(millis: float) -> None:
    # Durations whose milliseconds are exactly halfway (binary fractions of sixteenths): both
    # ways round the exact value half to even.
    seconds = millis / 1000
    for _ in range(8):  # a neighbour whose product is the tie itself, where there is one
        if seconds * 1000 == millis:
            break
        seconds = math.nextafter(seconds, math.inf if seconds * 1000 < millis else -math.inf)
    line = LineFormatter(redactor()).line((T, *GRANTED, seconds))
    assert line == old_line(JsonFormatter(redactor()), T, GRANTED, seconds) + "\n"


def test_addresses_are_remembered_by_value_and_type() -> None:
    formatter = LineFormatter(redactor())
    for client in ("127.0.0.1", "127.0.0.1", "::1", "unknown", "a b", 1, 1.0, True):
        values = (*GRANTED[:-1], client)
        assert formatter.line((T, *values, 0.5)) == (
            old_line(JsonFormatter(redactor()), T, values, 0.5) + "\n"
        )


def test_equal_values_of_other_types_are_not_taken_for_remembered_ones(
    fixed_clock: float,
) -> None:
    # 200, 200.0 and True are equal dictionary keys; JSON writes them differently.
    redact = redactor()
    stream = io.StringIO()
    writer = AccessLog(redact, stream)
    variants = [(*GRANTED[:2], status, *GRANTED[3:]) for status in (200, 200.0, True, 200)]
    for values in variants:
        writer.log(*values, 0.25)
    writer.close()
    formatter = JsonFormatter(redact)
    assert written(stream) == [old_line(formatter, fixed_clock, v, 0.25) for v in variants]
    assert [json.loads(line)["status"] for line in written(stream)] == [200, 200.0, True, 200]


def test_a_secret_name_that_is_a_field_name_is_redacted_as_before(fixed_clock: float) -> None:
    redact = Redactor(secret_cookie="client", secret_params=["reason"])
    stream = io.StringIO()
    writer = AccessLog(redact, stream)
    writer.log(*GRANTED, 0.25)
    writer.close()
    (line,) = written(stream)
    assert line == old_line(JsonFormatter(redact), fixed_clock, GRANTED, 0.25)
    assert (json.loads(line)["client"], json.loads(line)["reason"]) == ("[redacted]",) * 2


def test_the_observer_logs_what_it_logged_before(fixed_clock: float) -> None:
    redact = redactor()
    stream = io.StringIO()
    writer = AccessLog(redact, stream)
    previous = access_log.current
    access_log.install(writer)
    try:
        observer = Observer(Metrics(), TrustedProxies())
        headers = CIMultiDict({"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
        callback = RequestView(
            "POST", "/_paywall/callbacks/%53ECRET?x=1", headers, "127.0.0.1", "http"
        )
        page = RequestView("GET", "/premium/a?transferToken=abc", CIMultiDict(), "::1", "http")
        record = Record("proxy", "granted", "subscriber", "hit", "100001")
        started = time.perf_counter()
        observer.logged(callback, Record("callback", "ok", "ok"), 202, started)
        observer.logged(page, record, 200, started)
        observer.logged(page, record, 200, started)  # the client from memory
        assert writer.flush()
    finally:
        access_log.install(previous)
    lines = [json.loads(line) for line in written(stream)]
    assert [(line["path"], line["client"], line["status"]) for line in lines] == [
        ("/_paywall/callbacks/[redacted]", "10.0.0.1", 202),
        ("/premium/a", "::1", 200),
        ("/premium/a", "::1", 200),
    ]
    assert "ECRET" not in stream.getvalue()
    assert "abc" not in stream.getvalue()
    assert all(0 <= line["duration_ms"] < 10_000 for line in lines)
    assert list(lines[1]) == ["ts", "level", "logger", "msg", *FIELDS, "duration_ms"]


def test_a_thread_without_a_loop_formats_its_chunks_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A WSGI worker's thread: every CHUNK-th line formats the chunk in that call, and the
    # writer formats the lines no chunk took, every line in order and redacted.
    stream, writer, watched = watched_writer(monkeypatch)
    logged = 2 * access_log.CHUNK + 3
    for i in range(logged):
        writer.log("GET", f"/{i}?token=x", 200, "public", "public", "none", None, "::1", 0.0)
        assert len(watched.threads) == (i + 1) // access_log.CHUNK * access_log.CHUNK
    assert set(watched.threads) == {threading.get_ident()}
    writer_thread = writer._thread
    assert writer.flush()
    assert writer_thread is not None
    assert watched.threads[2 * access_log.CHUNK :] == [writer_thread.ident] * 3
    paths = [json.loads(text)["path"] for text in written(stream)[1:]]
    assert paths == [f"/{i}?token=[redacted]" for i in range(logged)]
    writer.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(io.StringIO, id="text"),
        pytest.param(io.BytesIO, id="binary"),
        pytest.param(lambda: io.TextIOWrapper(io.BytesIO(), write_through=True), id="text-buffer"),
    ],
)
def test_any_stream(make: Any, fixed_clock: float) -> None:
    stream = make()
    writer = AccessLog(redactor(), stream)
    writer.log(*GRANTED, 0.001)
    writer.close()
    # The text stream's bytes are in its buffer (as sys.stderr's).
    data = stream.buffer.getvalue() if isinstance(stream, io.TextIOWrapper) else stream.getvalue()
    text = data.decode() if isinstance(data, bytes) else data
    assert text == old_line(JsonFormatter(redactor()), fixed_clock, GRANTED, 0.001) + "\n"


# --- batches, threads -------------------------------------------------------------------------


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_one_write_per_batch() -> None:
    stream = CountingStream()
    # No timed round while the test logs (a stalled test thread would see one): the first
    # line is written at once, the batch by close().
    writer = AccessLog(redactor(), stream, interval=60.0)
    writer.log(*GRANTED, 0.001)  # starts the writer, which writes it at once
    until(lambda: stream.writes == 1)
    for _ in range(500):
        writer.log(*GRANTED, 0.001)
    writer.close()
    assert len(written(stream)) == 501
    assert stream.writes == 2


class Watched:
    """A writer's formatter (compiled in the compiled build), noting the thread of each line."""

    def __init__(self, writer: AccessLog) -> None:
        self.formatter = writer._format
        self.threads: list[int] = []

    def line(self, entry: tuple[Any, ...]) -> str:
        self.threads.append(threading.get_ident())
        return self.formatter.line(entry)

    def dropped_line(self, dropped: int) -> str:
        return self.formatter.dropped_line(dropped)


def started(writer: AccessLog, stream: io.StringIO) -> None:
    """Start ``writer``'s thread and let it write a first line (it then waits for its timer)."""
    writer.log("GET", "/first", 200, "public", "public", "none", None, "::1", 0.001)
    assert writer.flush()
    assert len(written(stream)) == 1


def watched_writer(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, AccessLog, Watched]:
    """A started writer whose rounds are its flushes and close only (no timed round in a
    test), its formatter watched from the next line on."""
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream, interval=60.0)
    watched = Watched(writer)
    monkeypatch.setattr(writer, "_format", watched)
    started(writer, stream)
    watched.threads.clear()
    return stream, writer, watched


async def test_an_event_loop_formats_its_chunks_between_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # log() only appends; a full chunk is formatted by the loop once the callback that logged
    # it is done, and the writer formats (and writes) the rest, every line in order.
    stream, writer, watched = watched_writer(monkeypatch)
    logged = [f"/n/{i}" for i in range(3 * access_log.CHUNK + 5)]
    for i, path in enumerate(logged):
        writer.log("GET", path, 200, "public", "public", "none", None, "::1", 0.001)
        if (i + 1) % access_log.CHUNK == 0:
            assert len(watched.threads) == i + 1 - access_log.CHUNK  # not inside log()
            await asyncio.sleep(0)  # the loop's next round: the chunk is formatted
            assert len(watched.threads) == i + 1
    assert len(written(stream)) == 1  # nothing written yet: that is the writer's
    assert set(watched.threads) == {threading.get_ident()}
    assert writer.flush()
    loop_lines = 3 * access_log.CHUNK
    assert set(watched.threads[loop_lines:]) == {writer._thread.ident if writer._thread else 0}
    assert len(watched.threads) == len(logged)
    assert [json.loads(text)["path"] for text in written(stream)[1:]] == logged
    writer.close()


async def test_many_formatted_lines_wake_the_writer_before_its_timer() -> None:
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream, interval=60.0, max_lines=4 * access_log.CHUNK)
    started(writer, stream)
    for i in range(2 * access_log.CHUNK):  # half of max_lines: past a quarter of it
        writer.log("GET", f"/{i}", 200, "public", "public", "none", None, "::1", 0.001)
    await asyncio.sleep(0)  # formatted by the loop: that wakes the writer
    deadline = time.monotonic() + 5.0
    while len(written(stream)) < 1 + 2 * access_log.CHUNK:
        assert time.monotonic() < deadline, "the writer waited for its timer"
        await asyncio.sleep(0.01)
    assert writer.close()


def test_a_loop_gone_before_its_callback_leaves_the_lines_to_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The loop that was to format a chunk stopped first: the writer's next round formats and
    # writes it, and the next chunk is scheduled on a loop again.
    stream, writer, watched = watched_writer(monkeypatch)

    async def log_a_chunk(tag: str, then_format: bool) -> None:
        for i in range(access_log.CHUNK):
            writer.log("GET", f"/{tag}/{i}", 200, "public", "public", "none", None, "::1", 0.0)
        if then_format:
            await asyncio.sleep(0)  # this loop formats them: a callback was scheduled
            assert (
                watched.threads[-access_log.CHUNK :] == [threading.get_ident()] * access_log.CHUNK
            )

    gone = asyncio.new_event_loop()
    try:
        gone.run_until_complete(log_a_chunk("gone", then_format=False))  # its callback never runs
    finally:
        gone.close()
    assert writer.flush()
    assert len(written(stream)) == 1 + access_log.CHUNK
    asyncio.run(log_a_chunk("next", then_format=True))
    assert writer.close()
    assert len(written(stream)) == 1 + 2 * access_log.CHUNK


def test_many_threads_every_line_exactly_once() -> None:
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream, interval=0.005, max_lines=1_000_000)
    threads, per_thread = 8, 2_000
    start = threading.Barrier(threads)

    def run(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            writer.log("GET", f"/t{n}/{i}", 200, "public", "public", "none", None, "::1", 0.001)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert writer.close()
    lines = [json.loads(line) for line in written(stream)]  # each a whole JSON object
    seen = Counter(line["path"] for line in lines)
    assert len(seen) == threads * per_thread
    assert set(seen.values()) == {1}
    assert {line["msg"] for line in lines} == {"request"}


def test_close_writes_everything_and_a_later_line_starts_again() -> None:
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream, interval=60.0)  # only flush and close write
    writer.log(*GRANTED, 0.001)
    time.sleep(0.05)
    for _ in range(99):
        writer.log(*GRANTED, 0.001)
    assert writer.close()
    assert len(written(stream)) == 100
    assert writer.waiting == 0
    writer.log(*GRANTED, 0.001)
    assert writer.flush()
    assert len(written(stream)) == 101
    writer.close()


def test_flush_without_lines_returns_at_once() -> None:
    # Nothing logged: nothing to wait for, so no writer thread is started for it (a flush that
    # waited would have to start one and wait for its round).
    writer = AccessLog(redactor(), io.StringIO())
    assert writer.flush()
    assert writer._thread is None
    assert writer.close()
    assert writer._thread is None


def test_an_idle_writer_wakes_for_the_next_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "IDLE_AFTER", 0.05)
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream, interval=0.01)
    writer.log(*GRANTED, 0.001)
    until(lambda: len(written(stream)) == 1)
    time.sleep(0.3)  # long idle: the writer waits for a line, not for a timer
    assert len(written(stream)) == 1
    writer.log(*GRANTED, 0.001)
    until(lambda: len(written(stream)) == 2)
    writer.close()


# --- a stuck stream ---------------------------------------------------------------------------


@dataclass
class StuckPipe:
    """A pipe that is full and that nobody reads, until :meth:`read_all`."""

    read_fd: int
    stream: IO[bytes]

    def read_all(self) -> threading.Thread:
        self.data = bytearray()

        def read() -> None:
            while chunk := os.read(self.read_fd, 65536):
                self.data += chunk

        reader = threading.Thread(target=read)
        reader.start()
        return reader


@pytest.fixture
def stuck_pipe() -> Iterator[StuckPipe]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        while True:
            os.write(write_fd, b"#" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    stream = os.fdopen(write_fd, "wb")
    try:
        yield StuckPipe(read_fd, stream)
    finally:
        if not stream.closed:
            stream.close()
        os.close(read_fd)


def test_a_stuck_stream_never_blocks_a_request_and_drops_are_counted(
    stuck_pipe: StuckPipe,
) -> None:
    max_lines, total = 500, 20_000
    writer = AccessLog(redactor(), stuck_pipe.stream, interval=0.01, max_lines=max_lines)
    writer.log("GET", "/first", 200, "public", "public", "none", None, "::1", 0.001)
    until(lambda: writer.waiting == 0)  # the writer took /first: it is stuck writing it
    started = time.monotonic()
    for i in range(total - 1):
        writer.log("GET", f"/{i}", 200, "public", "public", "none", None, "::1", 0.001)
    assert time.monotonic() - started < 2.0  # about a microsecond a line: it never waited
    assert writer.waiting == max_lines  # memory bounded
    started = time.monotonic()
    assert not writer.flush(0.2)  # bounded: the caller goes on
    assert time.monotonic() - started < 1.0

    reader = stuck_pipe.read_all()
    assert writer.flush(10)
    assert writer.close()
    stuck_pipe.stream.close()
    reader.join(10)
    lines = [json.loads(line) for line in stuck_pipe.data.lstrip(b"#").decode().splitlines()]
    requests = [line for line in lines if line["msg"] == "request"]
    warnings = [line for line in lines if line["msg"] != "request"]
    assert [line["path"] for line in requests] == ["/first"] + [f"/{i}" for i in range(max_lines)]
    (warning,) = warnings
    assert warning == {
        "ts": warning["ts"],
        "level": "warning",
        "logger": "gateway.access",
        "msg": "access log lines dropped",
        "dropped": total - 1 - max_lines,
    }
    assert lines[-1] == warning


def test_a_closed_stream_does_not_stop_the_writer() -> None:
    stream = io.StringIO()
    writer = AccessLog(redactor(), stream)
    stream.close()
    writer.log(*GRANTED, 0.001)
    assert writer.flush(5)  # the line is lost (nowhere to write it), the writer goes on
    assert writer.close()


# --- the process's access log: configure_logging, exit, fork -----------------------------------


def run_script(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "access.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )


def test_lines_are_written_at_exit(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        from gateway import access_log
        from gateway.config import LoggingSettings
        from gateway.logs import configure_logging

        configure_logging(LoggingSettings(level="info"))
        assert access_log.current is not None
        for i in range(1000):
            access_log.current.log("GET", f"/{i}", 200, "public", "public", "none", None, "::1", 0)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["path"] for line in lines] == [f"/{i}" for i in range(1000)]


def test_a_forked_child_writes_its_own_lines_only(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import os, sys, time
        from gateway.access_log import AccessLog
        from gateway.logs import Redactor

        out = open(sys.argv[1], "ab")
        log = AccessLog(Redactor(), out, interval=30.0)

        def line(name):
            log.log("GET", "/" + name, 200, "public", "public", "none", None, "::1", 0.001)

        line("p0")
        time.sleep(0.2)  # the writer wrote p0; the next lines wait for its next round (30 s)
        for i in range(1, 10):
            line(f"p{i}")
        pid = os.fork()
        if pid == 0:
            for i in range(5):
                line(f"c{i}")
            sys.exit(0)  # atexit writes the child's lines, and only those
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        line("p10")  # the parent's writer still works; atexit writes p1..p10
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    paths = Counter(line["path"] for line in lines)
    expected = {f"/p{i}" for i in range(11)} | {f"/c{i}" for i in range(5)}
    assert set(paths) == expected
    assert set(paths.values()) == {1}


@pytest.fixture
def process_access_log() -> Iterator[None]:
    """Restores the process's access log."""
    previous = access_log.current
    try:
        yield
    finally:
        access_log.install(previous)


@pytest.mark.usefixtures("process_access_log")
def test_install_closes_the_one_it_replaces() -> None:
    first = io.StringIO()
    access_log.install(AccessLog(redactor(), first, interval=60.0))
    assert access_log.current is not None
    access_log.current.log(*GRANTED, 0.001)
    access_log.install(None)
    assert access_log.current is None
    assert len(written(first)) == 1
    assert access_log.flush()  # nothing installed: nothing to do


@pytest.mark.usefixtures("process_access_log")
async def test_the_asgi_lifespan_shutdown_writes_the_last_lines() -> None:
    stream = io.StringIO()
    access_log.install(AccessLog(redactor(), stream, interval=60.0))  # only flushes write
    settings = Settings(
        platform={"base_url": "http://127.0.0.1:9/api/v3.0"},
        routes=[{"path": "/**", "public": True}],
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":  # a lifespan it leaves to the middleware
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    middleware = PaywallMiddleware(app, settings)
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan.put_nowait({"type": "lifespan.startup"})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    server = asyncio.create_task(middleware({"type": "lifespan"}, lifespan.get, send))
    for n in range(3):
        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/{n}",
            "raw_path": f"/{n}".encode(),
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 50000),
        }
        await middleware(scope, receive, send)
    lifespan.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server, 10)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert [json.loads(line)["path"] for line in written(stream)] == ["/0", "/1", "/2"]


def test_log_is_the_intakes_own_unless_a_subclass_has_its_own() -> None:
    """An access log's ``log`` is its Intake's (compiled in the compiled build: no
    interpreted frame per request); a subclass that defines ``log`` keeps it."""
    stream = io.StringIO()
    plain = AccessLog(redactor(), stream)

    class Counting(AccessLog):
        calls = 0

        def log(self, *values: Any) -> None:
            Counting.calls += 1
            super().log(*values)

    counting = Counting(redactor(), stream)
    try:
        assert plain.log == plain._in.log
        assert type(plain.log.__self__) is access_lines.Intake
        counting.log("GET", "/a", 200, "granted", "granted", "l1", None, "127.0.0.1", 0.001)
        assert Counting.calls == 1
        assert counting.flush()
        assert written(stream)[-1].startswith('{"ts":')
    finally:
        plain.close()
        counting.close()
