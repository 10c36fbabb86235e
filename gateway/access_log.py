"""The access log: one JSON line per request, formatted between requests and written off the
request path.

A request only appends a tuple of its raw values (and ``time.time()``) to a bounded
:class:`collections.deque` (atomic under the GIL: no lock, no I/O there). Every :data:`CHUNK`
lines the chunk is formatted, about 45 µs for 32 lines: by a thread that runs an event loop
(the gateway's server, an ASGI app's) with ``call_soon``, after the response that filled it
went out, between two requests; by any other thread (a WSGI worker's, whose lines are logged
as its response ends) in that call. A daemon writer thread wakes every :data:`INTERVAL`
seconds (sooner when a quarter of :data:`MAX_LINES` waits), formats the lines no chunk took
and writes everything with one ``write`` + ``flush`` of the stream's binary buffer, so a line
never interleaves with the logging module's lines on the same stream. After
:data:`IDLE_AFTER` seconds without a line it sleeps until the next one (the only request that
sets an event is the first after a quiet spell).

Why requests' threads format their own lines: under the GIL, a second thread formatting them
costs the loop more than formatting them itself. While the writer waits for the GIL, every
system call of a busy loop releases it, signals the writer and takes it back (thousands of
futex wake-ups a second), and while the writer holds it the loop waits. In-process (a loop of
socket round trips and Python work, one line per request, alternated bursts), the loop ran
57,000-63,000 requests a second with the writer formatting, 73,000-84,000 with the loop
formatting and the writer only writing every 100 ms, and 93,000-102,000 with no access log.

The lines are exactly what :class:`gateway.logs.JsonFormatter` made of
``logging.getLogger("gateway.access").info("request", extra={"fields": ...})``: same keys in
the same order, same values, same redaction (:mod:`gateway.access_lines` makes them).

* **Bounded.** At most :data:`MAX_LINES` lines wait (formatted or not); when the stream is
  stuck (a full pipe nobody reads) further lines are dropped and counted, and once writing
  resumes one warning line says how many (``"msg":"access log lines dropped","dropped":N``).
  A request never waits for the stream.
* **Nothing lost at the end.** :meth:`AccessLog.flush` waits (at most ``timeout`` seconds)
  until every line logged before it is written; ``paywall-gateway serve`` calls it once its
  listeners have drained, the ASGI middleware at lifespan shutdown, and ``atexit`` in every
  process (a WSGI worker leaves through ``sys.exit``).
* **Threads and forks.** Any number of threads may log; one formats at a time, in order. The
  writer starts in the process that logs: an ``os.register_at_fork`` hook makes a forked child
  forget its parent's lines and writer (and a pid check catches a fork that bypassed the
  hook).

One access log per process (:func:`install`, done by :func:`gateway.logs.configure_logging`);
:data:`current` is None while it is off, which is all :class:`~gateway.http.observe.Observer`
checks per request.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from gateway.access_lines import Intake, LineFormatter
from gateway.redaction import Redactor

__all__ = [
    "CHUNK",
    "FLUSH_TIMEOUT",
    "INTERVAL",
    "MAX_LINES",
    "AccessLog",
    "current",
    "flush",
    "install",
]

INTERVAL = 0.1  # seconds between the writer's rounds while lines keep coming
CHUNK = 32  # lines an event loop formats at once, between two requests (about 45 µs)
IDLE_AFTER = 1.0  # seconds without a line before the writer sleeps until the next one
MAX_LINES = 10_000  # lines waiting at most; more are dropped (and counted)
FLUSH_TIMEOUT = 3.0  # seconds flush() waits for a stuck stream at most

current: AccessLog | None = None
"""The process's access log (:func:`install`); None: off."""


def install(access_log: AccessLog | None) -> None:
    """Make ``access_log`` the process's access log (None turns it off); the one it replaces is
    closed (its lines written)."""
    global current
    previous, current = current, access_log
    if previous is not None and previous is not access_log:
        previous.close()


def flush(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Write every line the process's access log holds; False if that took over ``timeout``."""
    access_log = current
    return True if access_log is None else access_log.flush(timeout)


class AccessLog:
    """Access-log lines on ``stream`` (default: ``sys.stderr`` as it is now), redacted by
    ``redactor``. :meth:`log` is the request path; the writer thread writes."""

    def __init__(
        self,
        redactor: Redactor,
        stream: IO[Any] | None = None,
        *,
        interval: float = INTERVAL,
        max_lines: int = MAX_LINES,
    ) -> None:
        if stream is None:
            stream = sys.stderr
        self._write = _writer(stream)
        self._interval = interval
        self._idle_rounds = max(1, round(IDLE_AFTER / interval))
        # The request path's half: the lines logged and not formatted yet (and flushes'
        # events), the count formatted and not written, and the flags it reads.
        self._in = Intake(max_lines, CHUNK, self._format_soon, self._drop, self._wake_writer)
        if type(self).log is AccessLog.log:  # (a subclass's own log stays its own)
            self.log = self._in.log  # type: ignore[method-assign]  # (compiled, no frame)
        self._chunks: deque[tuple[str, int] | threading.Event] = deque()  # formatted, unwritten
        self._failed = 0  # entries no encoder took (under _formatting)
        self._nudge_at = max(1, max_lines // 4)  # formatted lines that wake the writer early
        self._nudged = False  # it was woken early this round
        self._dropped = 0
        self._pid = os.getpid()
        self._lock = threading.Lock()  # starting and stopping the writer, the dropped count
        self._formatting = threading.Lock()  # the formatter, _chunks' order, _formatted
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._format = LineFormatter(redactor)  # under _formatting only (it keeps memos)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, AccessLog._forked))
        atexit.register(_call, ref, AccessLog._at_exit)

    @property
    def waiting(self) -> int:
        """Lines logged and not yet written (at most ``max_lines``, and any flush waiting)."""
        return len(self._in.lines) + self._in.formatted

    # --- the request path -------------------------------------------------------------------

    def log(
        self,
        method: str,
        path: str,
        status: int,
        verdict: str,
        reason: str,
        cache: str,
        customer_id: str | None,
        client: str,
        duration: float,
    ) -> None:
        """One request's line; ``duration`` in seconds. Never blocks on the stream; formats
        only in a thread without an event loop, every :data:`CHUNK` lines. (Each instance
        answers this with its compiled :meth:`Intake.log
        <gateway.access_lines.Intake.log>`, set in ``__init__``: this is its signature.)"""
        self._in.log(method, path, status, verdict, reason, cache, customer_id, client, duration)

    def _format_soon(self) -> None:
        """Format a chunk of waiting lines: in a thread that runs an event loop once the loop
        is done with the callbacks it is running (the request that logged last among them);
        in any other thread (a WSGI worker's, whose lines are logged as its response ends)
        right here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._format_waiting(False)
            return
        self._in.soon = True  # one callback at a time (the writer's round clears it too)
        loop.call_soon(self._format_now)

    def _format_now(self) -> None:
        self._in.soon = False
        self._format_waiting(False)

    def _format_waiting(self, wait: bool) -> None:
        """Format the lines waiting into chunks for the writer (flushes keep their place).
        Without ``wait``, a thread that finds another formatting leaves its lines to it."""
        formatting = self._formatting
        if not formatting.acquire(wait):
            return
        try:
            lines = self._in.lines
            chunks = self._chunks
            popleft = lines.popleft
            line = self._format.line
            out: list[str] = []
            for _ in range(len(lines)):
                try:
                    entry = popleft()
                except IndexError:  # cleared meanwhile (after a fork that bypassed the hook)
                    break
                if isinstance(entry, tuple):
                    try:
                        out.append(line(entry))
                    except Exception:  # a value no encoder takes: counted, the writer goes on
                        self._failed += 1
                else:
                    if out:
                        chunks.append(("".join(out), len(out)))
                        self._in.formatted += len(out)
                        out = []
                    chunks.append(entry)
            if out:
                chunks.append(("".join(out), len(out)))
                self._in.formatted += len(out)
            if self._in.formatted >= self._nudge_at and not self._nudged:
                self._nudged = True  # many lines wait: the writer need not wait for its timer
                self._wake.set()
        finally:
            formatting.release()

    def _drop(self) -> None:
        if self._pid != os.getpid():
            self._forked()  # a fork that bypassed the hook: these are the parent's lines
            return
        with self._lock:
            self._dropped += 1

    def _wake_writer(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        if self._thread is None:
            self._start()
        else:
            self._wake.set()

    # --- the writer thread ------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._in.idle = False
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="paywall-access-log", daemon=True
            )
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        try:
            self._rounds(stop)
        finally:  # stopped (or, against all intent, failed): the next line starts a writer
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    self._in.idle = True
            if self._in.lines or self._chunks:  # logged (or a flush asked) while it was stopping
                self._wake_writer()

    def _rounds(self, stop: threading.Event) -> None:
        wake = self._wake
        quiet = 0
        while True:
            wrote = self._drain()
            if stop.is_set():
                if wrote:
                    continue
                return
            quiet = 0 if wrote else quiet + 1
            if quiet >= self._idle_rounds:
                quiet = 0
                wake.clear()
                self._in.idle = True
                if not (self._in.lines or self._chunks or self._dropped or self._failed):
                    wake.wait()  # a line now sees _idle and wakes us
                self._in.idle = False
            else:
                wake.wait(self._interval)
            wake.clear()

    def _drain(self) -> bool:
        """Write what is waiting; False when there was nothing."""
        self._in.soon = False  # a loop that closed before its callback ran does not stop the chunks
        self._nudged = False
        if self._in.lines:
            self._format_waiting(True)  # the lines no chunk took
        chunks = self._chunks
        if not chunks and not self._dropped and not self._failed:
            return False
        out: list[str] = []
        flushes: list[threading.Event] = []
        taken = 0
        popleft = chunks.popleft
        for _ in range(len(chunks)):
            item = popleft()
            if isinstance(item, tuple):
                out.append(item[0])
                taken += item[1]
            else:
                flushes.append(item)
        if taken or self._dropped or self._failed:
            with self._lock, self._formatting:
                self._in.formatted -= taken  # in the writer's hands now, no longer waiting
                dropped = self._dropped + self._failed
                self._dropped = self._failed = 0
                if dropped:
                    out.append(self._format.dropped_line(dropped))
        if out:
            with contextlib.suppress(Exception):  # the stream is gone (closed, EPIPE)
                self._write("".join(out).encode("ascii"))
        for done in flushes:
            done.set()
        return True

    # --- flush, close, fork, exit -----------------------------------------------------------

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every line logged so far is written; False after ``timeout`` seconds
        (the stream is stuck: the lines stay queued, the caller goes on)."""
        if self._pid != os.getpid():
            self._forked()
        if self._thread is None:
            if not self._in.lines and not self._chunks and not self._dropped:
                return True
            self._start()
        done = threading.Event()
        self._in.lines.append(done)  # after every line logged so far; never dropped
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """:meth:`flush`, then stop the writer thread (a later line starts it again); False
        if that took over ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._lock:
            thread, stop = self._thread, self._stop
        if thread is None:
            return flushed
        stop.set()  # it writes what is left, then returns
        self._wake.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        return flushed and not thread.is_alive()  # stuck in a write: it stops once that returns

    def _forked(self) -> None:
        """In a forked child: the parent's lines are the parent's to write, its writer thread
        does not exist here, and its locks may have been held at the fork."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._formatting = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._in.lines.clear()
        self._chunks.clear()
        self._in.formatted = 0
        self._failed = 0
        self._in.soon = False
        self._nudged = False
        self._dropped = 0
        self._in.idle = True

    def _at_exit(self) -> None:
        self.flush(FLUSH_TIMEOUT)


def _writer(stream: IO[Any]) -> Callable[[bytes], None]:
    """One write and one flush of ``data`` to ``stream``: through a text stream's buffer (whose
    lock the logging module's writes to it take too), or straight to a binary one."""
    target = getattr(stream, "buffer", None)
    if target is None and (
        isinstance(stream, io.TextIOBase) or isinstance(getattr(stream, "encoding", None), str)
    ):
        text = stream

        def write_text(data: bytes) -> None:
            text.write(data.decode("ascii"))
            text.flush()

        return write_text
    if target is None:
        target = stream
    if isinstance(target, io.RawIOBase):  # unbuffered: a write may take only part
        raw = target

        def write_raw(data: bytes) -> None:
            view = memoryview(data)
            while view:
                written = raw.write(view)
                view = view[written or 0 :]

        return write_raw
    binary = target

    def write(data: bytes) -> None:
        binary.write(data)
        binary.flush()

    return write


def _call(ref: weakref.ref[AccessLog], method: Callable[[AccessLog], None]) -> None:
    access_log = ref()
    if access_log is not None:
        method(access_log)
