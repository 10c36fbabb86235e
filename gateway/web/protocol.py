"""The listeners' HTTP/1 parser: its limits, and what becomes of a request it refuses.

**Limits.** Behind nginx, everything nginx accepted from a visitor reaches the gateway, plus
headers of nginx's own; whatever the gateway's parser then refuses cannot get the visitor a
normal answer. So the limits are nginx's (1.22, defaults), with room for what nginx adds:

* a request line or header line of at most ``large_client_header_buffers``' buffer, 8192
  bytes: a request target of about 8180 characters (nginx answers 414 beyond), a header of
  about 8190 (400 beyond). ``X-Original-URI`` carries the whole target under its own name,
  ``X-Forwarded-For`` gets ", <address>" appended: aiohttp counts name and value together;
* at most 1000 header lines (nginx: "client sent too many header lines", 400), to which nginx
  adds ``X-Original-URI``, ``X-Original-Method``, ``X-Forwarded-*``.

Proxy mode uses the same limits, so a visitor gets the same answer with or without nginx. The
price: a client may make a connection hold up to about 8.6 MB of headers (aiohttp's defaults:
128 headers, about 1 MB).

**Refused requests.** aiohttp answers a request its parser refuses (a control character in a
header, too many headers, an over-long line, garbage) with 400, logs it at ERROR with a
traceback, and puts the offending bytes into both the log and the 400 body — credentials in
any spelling included, and any client can flood the error log. Here instead:

* :class:`ProtocolErrorFilter`, on the logger the request handler is given (``handler_args``
  of the application, so every runner of it has it): such a record becomes one short INFO
  line, ``bad request from client: <error class>: <reason>``, without input bytes or
  traceback, at most :data:`LINES_PER_SECOND` per second; the next line that is written
  counts the ones left out (``suppressed``). Other records (the gateway's own errors) pass.
* :class:`GatewayRunner` (used by ``paywall-gateway serve``): its connections answer such a
  request with a 400 whose body names the error without echoing input bytes. aiohttp has no
  public hook for that body; the runner builds its :class:`web.Server` with this module's
  request handler.

**Answers made on arrival** (:data:`ANSWER_NOW`, ``serve`` only). An aiohttp request costs
a request object, a task, a response object and its header machinery: a bare aiohttp handler
spends about three quarters of its time there, more than a cached decision costs the gateway.
An app that sets :data:`ANSWER_NOW` is offered each request the moment the parser has read it,
on the loop, before any of that exists; it returns the complete response (bytes), or None and
the request goes aiohttp's way exactly as before. Instead of None it may return a note of what
it worked out (the gateway's driver: how its policy routed the request), which the app's handler
gets with that request (:func:`arrival_note`) instead of working it out again. Only requests
where that cannot change what the client sees are offered:

* the connection is idle: aiohttp holds no request it has not answered yet (none queued, none
  taken by its request loop whose answer is not written; the loop may still be on its way back
  from the last one: waiting for it to park would keep every later request of a busy
  connection on aiohttp's way), it is not closing, writing is not paused (a client that does
  not read its answers meets aiohttp's flow control, not a growing buffer); of pipelined
  requests only the leading ones, so answers leave in order;
* HTTP/1.1, keeping the connection open; no body (aiohttp's empty payload: neither
  Content-Length above 0 nor chunked), no upgrade, no ``Expect``, not HEAD.

The same parser read the same bytes, so the handler sees what aiohttp's request would show
(the raw target, the headers, the peer address, the scheme). After an answer the connection's
keep-alive timer is moved on, as aiohttp does after a request.

An answer that needs awaiting but nothing else of aiohttp's request (a decision read from
Redis or asked of the platform, a page relayed from proxy mode's upstream) may come back as a
:class:`Later`. The connection takes it
only for the last request of its read (nothing it has parsed can be overtaken), and is busy
until it is sent: bytes that arrive meanwhile are held back from the parser (reading paused;
at most one read is held) and parsed after it, so answers leave in order; the keep-alive
timer is stopped meanwhile; a graceful shutdown sends it first, as aiohttp finishes a request
in progress. A client that goes away meanwhile gets nothing; an answer that fails (a bug) is
logged and answered with a 500, and the connection closed. An answer too long to hold whole is
a :class:`Streamed`: its head is written, then its body as its :class:`BodySource` gives it,
with aiohttp's flow control (a client that does not read stops the source being read); the
connection stays busy until the last byte. A body that cannot be completed (:class:`Broken`,
or a bug, logged) cuts the connection: a truncated answer must not look complete. An answer
that is a future costs no task: the connection waits for it by a callback. This reads
aiohttp's request handler's internals (a few attributes); :data:`ANSWERS_SUPPORTED` says
whether the installed aiohttp has them, and without them every request goes aiohttp's way.

**Writes after the reads.** An answer made on arrival is not written at once: the loop's
answers of one round of reads are written together once it is done with those reads (one
callback per loop and round, :func:`_send_all`), as aiohttp's handler tasks write theirs. So
is a :class:`Later`'s answer held whole (bytes), with the answers to what the client sent
meanwhile (one write); the answers of one Redis batch, delivered in one round, go out
together after it (on an L2-only hit no faster or slower, within the noise of three
interleaved runs against a bare handler). A
write that makes the client's socket readable wakes the client; written one by one between
reads, nearly every answer woke a client that had gone back to sleep, which cost the gateway
more CPU in the kernel than a bare aiohttp handler pays per request (perf: 17 against 10 % of
its CPU in ``sock_def_readable``'s wake-up), and corked about a sixth of a cached decision's
CPU when the gateway and the client run on different cores. Whatever else writes to or closes
the connection (a :class:`Later`'s 500 or streamed head, aiohttp's request loop taking a
request, a forced close, a graceful shutdown) first writes what is waiting, so answers stay in
order; a client gone meanwhile gets nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDictProxy

__all__ = [
    "ANSWERS_SUPPORTED",
    "ANSWER_NOW",
    "DIRECT_HANDLER",
    "LINES_PER_SECOND",
    "LOGGER_NAME",
    "MAX_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_LINE_SIZE",
    "BodySource",
    "Broken",
    "GatewayRunner",
    "Later",
    "ProtocolErrorFilter",
    "Streamed",
    "arrival_note",
    "describe",
    "expect_continue",
    "handler_args",
    "protocol_logger",
]

# nginx's large_client_header_buffers buffer (4 8k): the longest request or header line.
NGINX_LINE = 8192
# nginx refuses a request with more header lines than this ("too many header lines").
NGINX_HEADER_LINES = 1000

# aiohttp measures the request target alone.
MAX_LINE_SIZE = NGINX_LINE
# aiohttp measures name + value: room for X-Original-URI with the longest target, and for
# ", <IPv6 address>" that nginx appends to the visitor's X-Forwarded-For.
MAX_FIELD_SIZE = NGINX_LINE + 128
# The visitor's lines and the ones nginx adds (X-Original-*, X-Forwarded-*).
MAX_HEADERS = NGINX_HEADER_LINES + 32

LOGGER_NAME = "gateway.protocol"
LINES_PER_SECOND = 5

# The start of an exception message up to its first ":" or line break is aiohttp's or
# llhttp's description ("Invalid header value char", "Too many headers received", "Got more
# than 8192 bytes when reading"); the input bytes come after it. Kept only when it reads like
# one: two to twelve words, each letters or digits (never both: tokens mix them), at most 24
# characters, joined by "-" or "/" at most (e.g. "Content-Length").
_WORD = r"(?:[A-Za-z]{1,24}|[0-9]{1,24})(?:[-/](?:[A-Za-z]{1,24}|[0-9]{1,24}))*"
_DESCRIPTION = re.compile(rf"{_WORD}(?: {_WORD}){{1,11}}").fullmatch


def describe(exc: BaseException) -> str:
    """``exc`` named without any byte of the request: its class and, when there is one, the
    parser's own description of the problem."""
    name = type(exc).__name__
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    head = re.split(r"[:\n]", str(message), maxsplit=1)[0].strip()
    return f"{name}: {head}" if _DESCRIPTION(head) else name


def _protocol_error(record: logging.LogRecord) -> HttpProcessingError | None:
    """The parser error a record of the request handler is about, if it is about one."""
    info = record.exc_info
    if info and isinstance(info[1], HttpProcessingError):
        return info[1]
    return None


class ProtocolErrorFilter(logging.Filter):
    """Rewrites the request handler's records about requests the parser refused into one
    short line (no input bytes, no traceback) and drops those beyond ``per_second``."""

    def __init__(
        self, per_second: int = LINES_PER_SECOND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1.0
        self._written = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = _protocol_error(record)
        if exc is None:
            return True
        level = min(record.levelno, logging.INFO)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        with self._lock:
            now = self._clock()
            if now - self._window >= 1.0:
                self._window, self._written = now, 0
            if self._written >= self._per_second:
                self._suppressed += 1
                return False
            self._written += 1
            suppressed, self._suppressed = self._suppressed, 0
        client = record.args[0] if isinstance(record.args, tuple) and record.args else None
        fields: dict[str, Any] = {"client": str(client) if client is not None else None}
        if suppressed:
            fields["suppressed"] = suppressed
        record.msg = f"bad request from client: {describe(exc)}"
        record.args = ()
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = record.stack_info = None
        record.__dict__["fields"] = fields  # merged into the JSON line by gateway.logs
        return True


_install_lock = threading.Lock()


def protocol_logger() -> logging.Logger:
    """The logger the listeners' request handlers write to, with its filter (installed once
    per process, so the rate limit is the process's)."""
    logger = logging.getLogger(LOGGER_NAME)
    with _install_lock:
        if not any(isinstance(f, ProtocolErrorFilter) for f in logger.filters):
            logger.addFilter(ProtocolErrorFilter())
    return logger


def handler_args() -> dict[str, Any]:
    """``web.Application(handler_args=...)`` for a gateway listener: nginx's limits, and the
    filtered logger."""
    return {
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "logger": protocol_logger(),
    }


AnswerNow = Callable[[str, str, "CIMultiDictProxy[str]", str | None, str], object]
"""(method, raw target, headers, peer address, scheme) -> the whole response (bytes); a
:class:`Later`; None, or anything else, when it does not answer. Anything else is a note of
what it worked out on the way, handed to the app's handler with the same request
(:func:`arrival_note`)."""


class BodySource(Protocol):
    """The body of a :class:`Streamed` answer, as it comes (already framed for the wire)."""

    async def next(self) -> bytes:
        """The next bytes to send; ``b""`` once everything was given. Raises :class:`Broken`
        when the body cannot be completed (the connection is then cut)."""
        ...

    def close(self) -> None:
        """Called once, whatever happened (sent whole, the client went away, broken)."""
        ...


class Broken(Exception):
    """A :class:`BodySource` cannot complete its body (its own source failed, and said so in
    the log): the connection is cut, so the truncated answer cannot look complete."""


class Streamed:
    """A :class:`Later`'s answer too long to hold whole: ``head`` (the status line and
    headers) is sent at once, then ``body`` as it comes."""

    __slots__ = ("body", "head")

    def __init__(self, head: bytes, body: BodySource) -> None:
        self.head = head
        self.body = body


class Later:
    """An :data:`ANSWER_NOW` answer that needs awaiting (a lookup in Redis, a platform call,
    the upstream's answer) but nothing else of aiohttp's request: ``answer()`` gives an
    awaitable of the whole response (bytes), or of a :class:`Streamed` one. A future is waited
    for by a callback, a coroutine by a task of its own (the gateway's driver hands back a
    future that its access service sets: an L2-only hit then costs no task at all).

    The connection takes it only where the answer cannot overtake another one: the request is
    the last one of its read (module docstring, "Answers made on arrival"). Otherwise, and on a
    connection that does not take it, ``note`` is what the answerer returned instead (for the
    app's handler, :func:`arrival_note`), and ``answer`` is never called."""

    __slots__ = ("answer", "note")

    def __init__(self, note: object, answer: Callable[[], Awaitable[bytes | Streamed]]) -> None:
        self.note = note
        self.answer = answer


ANSWER_NOW: web.AppKey[AnswerNow] = web.AppKey("answer_now")
"""An app's synchronous answerer (module docstring, "Answers made on arrival")."""

# What the answers read and move of aiohttp's request handler (3.10 and later have them all).
_HANDLER_STATE = (
    "_messages",
    "_waiter",
    "_keepalive",
    "_keepalive_handle",
    "_keepalive_timeout",
    "_next_keepalive_close_time",
    "_process_keepalive",
    "_paused",
    "_reading_paused",
    "_buffer_paused",
    "_pause_transport_reading",
    "_resume_transport_reading",
    "_handle_request",
    "_close",
    "_force_close",
)
_HANDLER_NAMES = {
    name
    for klass in RequestHandler.__mro__
    for name in (*getattr(klass, "__slots__", ()), *vars(klass))
}
ANSWERS_SUPPORTED = all(name in _HANDLER_NAMES for name in _HANDLER_STATE)
"""Whether the installed aiohttp's request handler has what :data:`ANSWER_NOW` needs."""


def _awaited(answer: Awaitable[bytes | Streamed]) -> asyncio.Task[bytes | Streamed]:
    """A :class:`Later`'s awaitable answer (not a future) as a task of the running loop."""
    if asyncio.iscoroutine(answer):
        return asyncio.get_running_loop().create_task(answer)

    async def wait() -> bytes | Streamed:
        return await answer

    return asyncio.get_running_loop().create_task(wait())


# A Later whose answer failed (a bug, logged): aiohttp's answer to a failed handler, and the
# connection is closed after it (what else the client sent cannot be answered in order).
_SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 25\r\nConnection: close\r\n\r\n500 Internal Server Error"
)


class _RequestHandler(RequestHandler):
    """aiohttp's request handler, whose answer to a refused request echoes no input, and which
    offers requests to the app's :data:`ANSWER_NOW` as the parser reads them."""

    __slots__ = (
        "_answer_now",
        "_held",
        "_holding",
        "_later",
        "_note",
        "_peer",
        "_scheme",
        "_serving",
        "_unsent",
    )

    def __init__(self, *args: Any, answer_now: AnswerNow | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answer_now = answer_now if ANSWERS_SUPPORTED else None
        self._peer: str | None = None
        self._scheme = "http"
        # The answerer's note on the last request it declined: (that request's headers, note).
        self._note: tuple[CIMultiDictProxy[str], object] | None = None
        # A Later being answered: its future (then the task sending a Streamed body), and the
        # bytes that arrived meanwhile (held back from the parser until it is answered, reading
        # paused while they are).
        self._later: asyncio.Future[Any] | None = None
        self._held: bytearray | None = None
        self._holding = False
        # aiohttp's request loop has taken a request whose answer is not written yet.
        self._serving = False
        # Answers made on arrival, to be written after this round of reads (_send_soon).
        self._unsent: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._answer_now is None or self._parser is None:
            return
        # What aiohttp's request shows as ``remote`` and ``scheme``, read once per connection.
        peername = transport.get_extra_info("peername")
        if isinstance(peername, list | tuple):
            self._peer = str(peername[0])
        elif peername is not None:
            self._peer = str(peername)
        if transport.get_extra_info("sslcontext") is not None:
            self._scheme = "https"
        # Duck-typed: it stands in for the parser (feed_data, and the rest passed through).
        self._parser = _AnsweringParser(self._parser, self)  # type: ignore[assignment]

    def _handle_request(self, *args: Any) -> Any:
        """aiohttp's handling of a request its request loop took (the loop calls this in the
        same step as it takes the request, before the handling task runs): the connection is
        :attr:`_serving` until the answer is written."""
        self._send_unsent()  # (never seen: the answers of a read go first, see _send_all)
        self._serving = True
        return self._served(super()._handle_request(*args))

    async def _served(self, handling: Awaitable[Any]) -> Any:
        try:
            return await handling
        finally:
            self._serving = False

    def _process_keepalive(self) -> None:
        """aiohttp's keep-alive timer, which closes a connection whose request loop waits for
        a request; not while a :class:`Later` is answered (the loop waits meanwhile, as it
        does while idle): the timer is set again when the answer is sent (:meth:`_kept_alive`),
        counting from then."""
        if self._later is not None:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _answered(self, message: Any, payload: Any, last: bool) -> bool:
        """Whether ``message`` was answered here, then or :class:`Later` (the module
        docstring's rules); ``last``: no other request came with it in this read."""
        answer_now = self._answer_now
        transport = self.transport
        if (
            answer_now is None
            or transport is None
            or payload is not EMPTY_PAYLOAD
            or type(message) is not RawRequestMessage
            or message.version != HttpVersion11
            or message.should_close
            or message.upgrade
            or message.method == "HEAD"
            or self._messages
            or self._serving
            or self._close
            or self._force_close
            or self._paused
            or "Expect" in message.headers
        ):
            return False
        try:
            response = answer_now(
                message.method, message.path, message.headers, self._peer, self._scheme
            )
        except Exception as exc:  # a bug: aiohttp's way answers it (a 500), and logs it again
            self.log_exception("Error answering a request on arrival", exc_info=exc)
            return False
        if isinstance(response, Later):
            if last:
                self._answer_later(response)
                return True
            response = response.note
        if not isinstance(response, bytes):
            if response is not None:
                self._note = (message.headers, response)
            return False
        self._send_soon(response)
        self._kept_alive()
        return True

    def _send_soon(self, data: bytes) -> None:
        """Write ``data`` once the loop is done with this round of reads (the module
        docstring's "Writes after the reads"); the answers of pipelined requests in order."""
        unsent = self._unsent
        if unsent is not None:
            self._unsent = unsent + data
            return
        self._unsent = data
        loop = self._loop
        waiting = _UNSENT.get(loop)
        if waiting is None:
            waiting = _UNSENT[loop] = []
            loop.call_soon(_send_all, loop)
        waiting.append(self)

    def _send_unsent(self) -> None:
        """Write the answers waiting for the end of the round now (nothing to a transport
        that is closing or gone)."""
        data = self._unsent
        if data is None:
            return
        self._unsent = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def force_close(self) -> None:
        self._send_unsent()
        super().force_close()

    def _kept_alive(self) -> None:
        """What aiohttp's start() does after a request it keeps the connection open for: the
        keep-alive timer counts from now."""
        self._keepalive = True
        timeout = self._keepalive_timeout
        if timeout:
            close_time = self._loop.time() + timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def _answer_later(self, later: Later) -> None:
        """Answer ``later`` when it is ready; until then the connection is busy: what arrives
        is held (:meth:`_hold`), and the keep-alive timer, which closes idle connections,
        leaves it open (:meth:`_process_keepalive`; the timer is kept rather than stopped and
        made again for each answer). An answer that is a future is waited for by a callback;
        anything else awaitable by a task."""
        self._held = bytearray()
        try:
            answer = later.answer()
        except Exception as exc:  # a bug: answered as aiohttp answers one, a 500
            self.log_exception("Error answering a request", exc_info=exc)
            self._later_sent(None)
            return
        waiting = answer if isinstance(answer, asyncio.Future) else _awaited(answer)
        self._later = waiting
        waiting.add_done_callback(self._later_done)

    def _later_done(self, waiting: asyncio.Future[bytes | Streamed]) -> None:
        if waiting.cancelled():
            self._later = self._held = None
            self.force_close()  # the loop is going away: nothing will answer it
            return
        failure = waiting.exception()
        if failure is not None:  # a bug: answered as aiohttp answers one, a 500
            self.log_exception("Error answering a request", exc_info=failure)
            self._later_sent(None)
        else:
            self._later_sent(waiting.result())

    def _later_sent(self, response: bytes | Streamed | None) -> None:
        """Send a :class:`Later`'s answer (None: it failed), then what was held meanwhile; a
        :class:`Streamed` one's head, then its body (:meth:`_stream`). Whatever is written at
        once follows the answers still waiting for the end of their round (those to the
        requests before it in its read); bytes join them."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._later = self._held = None  # the client went away meanwhile
            if isinstance(response, Streamed):
                response.body.close()
            return
        if response is None:
            self._later = self._held = None
            self._send_unsent()
            transport.write(_SERVER_ERROR)
            self.force_close()
            return
        if isinstance(response, Streamed):
            self._send_unsent()
            transport.write(response.head)
            self._later = self._loop.create_task(self._stream(transport, response.body))
            return
        self._later = None
        self._send_soon(response)  # with the answers of the round that answered it
        self._answer_done()

    async def _stream(self, transport: asyncio.Transport, body: BodySource) -> None:
        """Send a :class:`Streamed` answer's body, waiting while writing is paused; then what
        was held meanwhile. A body that breaks, or a client that goes away, ends the
        connection."""
        complete = False
        try:
            while chunk := await body.next():
                if transport.is_closing():
                    return  # the client went away
                transport.write(chunk)
                if self._paused:
                    await self._drain_helper()
            complete = not transport.is_closing()
        except (Broken, ConnectionError):
            pass  # said where it broke; or the client went away
        except Exception as exc:  # a bug; the answer is cut short all the same
            self.log_exception("Error sending an answer's body", exc_info=exc)
        finally:
            self._later = None
            body.close()
            if not complete:
                self._held = None
                transport.abort()  # cancelled too: the loop is going away
        if complete:
            self._answer_done()

    def _answer_done(self) -> None:
        """After a :class:`Later`'s answer was sent whole: keep-alive, and on to what arrived
        meanwhile."""
        held, self._held = self._held, None
        self._kept_alive()
        if held:
            self.data_received(bytes(held))  # the requests that came meanwhile, in order
        if self._holding and self._held is None:
            self._holding = False
            if not self._reading_paused and not self._buffer_paused:
                self._resume_transport_reading()

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` (the client's next bytes) until the :class:`Later` is answered, and
        stop reading meanwhile: at most one read is held."""
        if self._held is not None:
            self._held += data
            if data and not self._holding:
                self._holding = True
                self._pause_transport_reading()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's)
        """aiohttp's graceful shutdown, after the :class:`Later` being answered is sent, a
        :class:`Streamed` one's body too: allowed as long as aiohttp allows the request its
        handler is on (its two phases of ``timeout`` each)."""
        self._send_unsent()
        try:
            async with asyncio.timeout(None if timeout is None else 2 * timeout):
                while (later := self._later) is not None and not later.done():
                    await asyncio.wait([later])  # its outcome is _later_done's and _stream's
        except TimeoutError:
            later = self._later
            if isinstance(later, asyncio.Task):  # cut, as aiohttp cancels its handler
                later.cancel()
        await super().shutdown(timeout)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            message = f"Bad request: malformed HTTP request ({describe(exc)})\n"
        return super().handle_error(request, status, exc, message)


def arrival_note(request: BaseRequest) -> object:
    """What the app's :data:`ANSWER_NOW` noted about ``request`` when it declined to answer it
    on arrival, or None; given once. The note is the request's only if the request's headers
    are the very object the answerer was given (aiohttp's request keeps the parser's): a note
    on any other request of the connection is not handed out."""
    handler = request.protocol
    if not isinstance(handler, _RequestHandler):
        return None
    note = handler._note
    if note is None or note[0] is not request.headers:
        return None
    handler._note = None
    return note[1]


_UNSENT: dict[asyncio.AbstractEventLoop, list[_RequestHandler]] = {}
"""Per event loop, the connections with answers waiting for the end of this round of reads
(an entry lives from the round's first answer to :func:`_send_all`)."""


def _send_all(loop: asyncio.AbstractEventLoop) -> None:
    """Write the answers ``loop`` made on arrival in this round of reads."""
    for handler in _UNSENT.pop(loop, ()):
        try:
            handler._send_unsent()
        except Exception as exc:  # one connection's failure is not the others'
            handler.log_exception("Error writing an answer", exc_info=exc)


class _AnsweringParser:
    """The connection's parser, through which the leading requests of each read are offered to
    :meth:`_RequestHandler._answered` before aiohttp queues them. Everything else (errors,
    upgrades, bodies, the parser's own flow control) is the parser's and aiohttp's, as before.

    aiohttp (3.14) has the parser stop after a queue's worth of requests (the rest of the read
    waits in the parser) and re-drives it as its request loop drains the queue. A read that
    filled the queue is therefore left to aiohttp whole: answering some of it here would leave
    the parser stopped with nobody to re-drive it. Below that the parser did not stop."""

    def __init__(self, parser: Any, handler: _RequestHandler) -> None:
        self._parser = parser
        self._handler: _RequestHandler | None = handler
        self._consumed: Callable[[], None] | None = getattr(parser, "message_consumed", None)
        self._queue_size: int = getattr(handler, "_max_msg_queue_size", 0) or 0

    def feed_data(self, data: bytes) -> tuple[Any, Any, Any]:
        handler = self._handler
        if handler is not None and handler._held is not None:
            handler._hold(data)  # a Later is being answered: nothing is parsed meanwhile
            return (), False, b""
        messages, upgraded, tail = self._parser.feed_data(data)
        if not messages or handler is None:
            return messages, upgraded, tail
        if self._queue_size and len(messages) >= self._queue_size:
            return messages, upgraded, tail
        answered = 0
        final = len(messages) - 1
        for index, (message, payload) in enumerate(messages):
            if not handler._answered(message, payload, index == final):
                break
            answered += 1
            if self._consumed is not None:
                self._consumed()  # its slot in the parser's queue: aiohttp never sees it
        if answered:
            messages = list(messages)[answered:]
        return messages, upgraded, tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class _Server(web.Server):
    def __init__(self, *args: Any, answer_now: AnswerNow | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answer_now = answer_now

    def __call__(self) -> RequestHandler:
        kwargs = {"logger": protocol_logger(), **self._kwargs}
        return _RequestHandler(self, loop=self._loop, answer_now=self._answer_now, **kwargs)


DIRECT_HANDLER: web.AppKey[Callable[[BaseRequest], Awaitable[web.StreamResponse]]] = web.AppKey(
    "direct_handler"
)
"""An app's handler for every request, router and middleware chain left out (set by the app)."""


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use :class:`_RequestHandler` (and, for an app
    without ``handler_args``' logger, the filtered logger).

    An app that sets :data:`DIRECT_HANDLER` has every request handed to that handler as it
    comes off the parser: aiohttp's router, match info and middleware chain cost a cached
    decision about a tenth of its time, and the gateway routes by its own reading of the path
    anyway. The handler then does what the application would have done before it (an
    ``Expect`` header: see :func:`expect_continue`).
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(
            self.app.get(DIRECT_HANDLER, server.request_handler),
            answer_now=self.app.get(ANSWER_NOW),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


async def expect_continue(request: BaseRequest) -> web.StreamResponse | None:
    """What aiohttp's application does with an ``Expect`` header before calling a handler: for
    HTTP/1.1, ``100-continue`` is answered with ``100 Continue`` at once (the client then sends
    the body), any other expectation is refused with a 417; HTTP/1.0 ignores the header."""
    expect = request.headers.get("Expect")
    if expect is None or request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return web.Response(status=417, text="Expectation failed\n")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer proper has not started yet
    await request.writer.drain()
    return None
