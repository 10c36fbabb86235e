"""The WSGI driver of the front-end policy: ``PaywallMiddleware(app, config=PATH_OR_SETTINGS)``.

Every HTTP rule is :mod:`gateway.http.policy`'s and every verdict the access service's, as for
the aiohttp server; this module only moves a WSGI request in and the answer out.

* **Synchronous path.** Requests that need only this process's memory (public and deny routes,
  no credentials, a session whose validation and access answer are both fresh in L1) are
  answered on the server's worker thread by :meth:`AccessService.peek
  <gateway.access.service.AccessService.peek>`: no awaiting, no I/O, no wait for another
  thread. Its docstring says how it stays correct beside the loop thread; an entry due for
  refresh-ahead is answered too, and its refresh handed to the loop without waiting.
* **Loop thread.** Everything else (misses, L2 entries, transfer tokens, logins) runs on one
  asyncio loop in a daemon thread shared by all worker threads of the process
  (:func:`asyncio.run_coroutine_threadsafe`): one platform client, Redis pool and single-flight
  table per process. :func:`gateway.runtime.open_runtime` is entered on it by the
  first request that needs it. A request waits at most ``timeout`` seconds (by default longer
  than the service's own worst case, so its verdict, stale or fail-open, comes first), then
  gets the policy's 503 and the work is cancelled.
* **Fork.** Threads do not survive fork (gunicorn forks its workers from the master). An
  ``os.register_at_fork`` hook, and a pid check for forks that bypass it, make a child forget
  its parent's loop thread and take a fresh lock, so each worker starts its own loop thread on
  its first request. The parent's loop and sockets are never used or closed in the child.
* **Exit.** The daemon thread never keeps a process alive; ``atexit`` (a gunicorn worker leaves
  through ``sys.exit``) closes the runtime on the loop and joins the thread for at most
  :data:`EXIT_TIMEOUT` seconds. :meth:`PaywallMiddleware.close` does the same on demand.

The raw target is ``RAW_URI`` (gunicorn) or ``REQUEST_URI`` (uWSGI, mod_wsgi); else it is rebuilt
from ``SCRIPT_NAME`` + ``PATH_INFO``, which the server has already percent-decoded, so the
ambiguity of ``/premium%2Fx`` (arriving as ``/premium/x``) cannot be seen there (the app reads
the same decoded path: at least both agree). Headers are the ``HTTP_*`` keys; WSGI merges
``X_Foo`` and ``X-Foo`` into ``HTTP_X_FOO``, which is why the policy compares names loosely.

A request let through reaches the app with ``environ["paywall.decision"]``
(:class:`~gateway.http.steps.Decision`); every ``HTTP_*`` key replaced by what
:func:`~gateway.http.forward.forward_headers` lets through; ``PATH_INFO``, ``RAW_URI`` /
``REQUEST_URI`` and ``QUERY_STRING`` set to the normalised path and the query without the
transfer token; a granted answer's Cache-Control made private. ``environ["paywall.middleware"]``
leads per-view rules (:mod:`gateway.flask`) back here.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from multidict import CIMultiDict

from gateway.access.build import utc_now
from gateway.access.outcome import AccessOutcome, Credentials, Verdict
from gateway.access.service import AccessService, Schedule
from gateway.config import Settings, load_settings
from gateway.core.policy import AccessRule
from gateway.errors import PlatformUnavailable
from gateway.http.forward import private_response_headers
from gateway.http.names import header_name
from gateway.http.observe import Observer
from gateway.http.policy import FrontEnd
from gateway.http.request import RequestView
from gateway.http.steps import Answer, Callback, Check, Login, Pass, Record
from gateway.metrics import Metrics
from gateway.runtime import Runtime, open_runtime
from gateway.store.cache import Clock

__all__ = ["CONTEXT_KEY", "DECISION_KEY", "MIDDLEWARE_KEY", "PaywallMiddleware", "request_view"]

DECISION_KEY = "paywall.decision"
MIDDLEWARE_KEY = "paywall.middleware"
CONTEXT_KEY = "paywall.context"
EXIT_TIMEOUT = 5.0  # seconds the process waits at exit for the runtime to close

log = logging.getLogger(__name__)
T = TypeVar("T")
_UNAVAILABLE = AccessOutcome(Verdict.UNAVAILABLE, "platform_unavailable")
# What a request target keeps unencoded when rebuilt from PATH_INFO (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_BODY_HEADERS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class Unavailable(Exception):
    """The loop thread gave no answer in time (or could not start): the policy's 503."""


def request_view(environ: WSGIEnvironment) -> RequestView:
    """A WSGI request as the policy reads it: the raw target, every header, the peer."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or _rebuilt_target(environ)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.add(key[5:].replace("_", "-"), value)
    for name, key in _BODY_HEADERS.items():
        if environ.get(key):
            headers.add(name, environ[key])
    scheme = environ.get("wsgi.url_scheme", "http")
    return RequestView(
        environ["REQUEST_METHOD"], target, headers, environ.get("REMOTE_ADDR") or None, scheme
    )


def _read_limited(environ: WSGIEnvironment, limit: int) -> bytes:
    """At most ``limit`` bytes of the request body. Without a Content-Length only a chunked
    body is read (the server bounds it); PEP 3333 allows nothing else."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH", "")
    if length.strip().isdigit():
        want = min(int(length), limit)
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        want = limit
    else:
        return b""
    body = bytearray()
    while len(body) < want:
        chunk = stream.read(want - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _rebuilt_target(environ: WSGIEnvironment) -> str:
    """SCRIPT_NAME + PATH_INFO (already decoded by the server: see the module docstring)."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    target = quote(path.encode("latin-1"), safe=_PATH_SAFE) or "/"
    query = environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


@dataclass(slots=True, repr=False, eq=False)
class RequestContext:
    """What the middleware knows about a request it let through, for per-view rules. The
    check holds the visitor's credentials: no ``repr`` shows them (environ gets dumped)."""

    middleware: PaywallMiddleware
    check: Check
    record: Record  # what the access log will say: a per-view rule's verdict replaces it
    private: bool = False  # a per-view rule granted: the response is this visitor's only


class _LoopThread:
    """One event loop in a daemon thread, holding the gateway's runtime while it runs."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Clock) -> None:
        self.pid = os.getpid()
        self.runtime: Runtime | None = None
        self.failed = False
        self._closing = False
        self._args = (settings, metrics, clock)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="paywall-wsgi-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the WSGI middleware's event loop failed")
        finally:
            self.failed = True
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._closing:  # stop() came before the event existed
            return
        async with open_runtime(*self._args) as runtime:
            self.runtime = runtime
            self._ready.set()
            await self._stopping.wait()

    def service(self, timeout: float) -> AccessService:
        if not self._ready.wait(timeout) or self.runtime is None or self.failed:
            raise Unavailable("the gateway's event loop is not running")
        return self.runtime.service

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """``coroutine``'s result, run on the loop; Unavailable after ``timeout`` seconds."""
        loop = self._loop
        try:
            if loop is None or self.failed:
                raise RuntimeError
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # not running, or closed meanwhile
            coroutine.close()
            raise Unavailable("the gateway's event loop is not running") from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Unavailable(f"no answer within {timeout:g} s") from None

    def soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop, without waiting (a refresh-ahead that peek started)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: no refresh needed
                loop.call_soon_threadsafe(callback)

    def stop(self, timeout: float) -> bool:
        """Close the runtime and stop the loop; False if that took longer than ``timeout``."""
        self._closing = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        self.thread.join(timeout)
        return not self.thread.is_alive()


class PaywallMiddleware:
    """The gateway as WSGI middleware around ``app``; ``config`` is a TOML path or Settings.

    ``metrics`` (exposed as :attr:`metrics` for an app's own ``/metrics``) and ``clock`` are
    made here unless given. ``timeout``: how long a request waits for the loop thread.
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: str | os.PathLike[str] | Settings,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        timeout: float | None = None,
    ) -> None:
        settings = config if isinstance(config, Settings) else load_settings(Path(config))
        self.app = app
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock = clock if clock is not None else utc_now
        self.frontend = FrontEnd(settings, self._clock, label="wsgi", inline=True)
        self._observer = Observer(self.metrics, self.frontend.trusted)
        self._callbacks = self.frontend.callback_receiver(self.metrics)
        self.timeout = timeout if timeout is not None else _default_timeout(settings)
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._abandoned: list[_LoopThread] = []  # a parent's, after fork: never touched again
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, PaywallMiddleware._forked))
        atexit.register(_call, ref, PaywallMiddleware._at_exit)

    # --- the request ----------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        environ[MIDDLEWARE_KEY] = self
        request = request_view(environ)
        step = self.frontend.route(request)
        if isinstance(step, Login):
            step = self._login(step)
        elif isinstance(step, Callback):
            step = self._callback(environ, step)
        elif isinstance(step, Check):
            access = step.access
            outcome = self._decide(
                lambda s, soon: s.peek(access, schedule=soon), lambda s: s.check(access)
            )
            answer = self.frontend.answer(step, outcome)
            if isinstance(answer, Pass):
                return self._pass(environ, start_response, request, step, answer, started)
            step = answer
        return self._reply(start_response, request, step, started)

    def _decide(
        self,
        peek: Callable[[AccessService, Schedule], AccessOutcome | None],
        check: Callable[[AccessService], Coroutine[Any, Any, AccessOutcome]],
    ) -> AccessOutcome:
        """``peek``'s outcome on this thread, else ``check``'s on the loop thread (bounded)."""
        try:
            loop = self._loop_thread()
            service = loop.service(self.timeout)
            outcome = peek(service, loop.soon)
            return outcome if outcome is not None else loop.run(check(service), self.timeout)
        except Unavailable as exc:
            log.warning("answering 503: %s", exc)
            return _UNAVAILABLE

    def _callback(self, environ: WSGIEnvironment, step: Callback) -> Answer:
        """A platform callback: admitted and read on this thread, applied on the loop's."""
        receiver = self._callbacks
        answer = receiver.admit(step)
        if answer is not None:
            return answer
        body = _read_limited(environ, receiver.body_limit)
        try:
            loop = self._loop_thread()
            service = loop.service(self.timeout)
            return loop.run(receiver.handle(step, body, service), self.timeout)
        except Unavailable as exc:
            log.warning("callback not applied: %s", exc)
            return receiver.unavailable()

    def _login(self, login: Login) -> Answer:
        try:
            loop = self._loop_thread()
            identity = loop.run(loop.service(self.timeout).login(login.token), self.timeout)
        except (PlatformUnavailable, Unavailable):
            return self.frontend.login_answer(login, None, unavailable=True)
        return self.frontend.login_answer(login, identity, unavailable=False)

    def _pass(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request: RequestView,
        check: Check,
        step: Pass,
        started: float,
    ) -> Iterable[bytes]:
        path_info = unquote_to_bytes(step.path).decode("latin-1")
        script = environ.get("SCRIPT_NAME", "")
        if script:
            if path_info != script and not path_info.startswith(script.rstrip("/") + "/"):
                bad = self.frontend.bad_request(request, "wsgi", "path outside the application")
                return self._reply(start_response, request, bad, started)
            path_info = path_info[len(script) :]
        self._observer.decided(step.record, started)
        self._rewrite(environ, request, step, path_info)
        context = RequestContext(self, check, step.record)
        environ[CONTEXT_KEY] = context
        status: list[int] = []

        def start(name: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [int(name.split(" ", 1)[0])]
            if step.private or context.private:
                headers = private_response_headers(headers)
            return start_response(name, headers, exc_info)

        def done() -> None:
            self._observer.logged(request, context.record, status[0] if status else 500, started)

        try:
            return _Logged(self.app(environ, start), done)
        except BaseException:
            done()
            raise

    def _rewrite(
        self, environ: WSGIEnvironment, request: RequestView, step: Pass, path_info: str
    ) -> None:
        headers = self.frontend.app_headers(request, step)
        for key in [key for key in environ if key.startswith("HTTP_")]:
            del environ[key]
        for name, value in headers.items():
            if header_name(name) in _BODY_HEADERS:
                continue  # CONTENT_TYPE / CONTENT_LENGTH stay as the server set them
            key = "HTTP_" + header_name(name).upper().replace("-", "_")
            if key in environ:
                value = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value
            environ[key] = value
        target = step.path + (f"?{step.query}" if step.query else "")
        for key in ("RAW_URI", "REQUEST_URI"):
            if key in environ:
                environ[key] = target
        environ["PATH_INFO"] = path_info
        environ["QUERY_STRING"] = step.query
        environ[DECISION_KEY] = step.decision

    def _reply(
        self, start_response: StartResponse, request: RequestView, answer: Answer, started: float
    ) -> Iterable[bytes]:
        reply = answer.reply
        if answer.record is not None:
            self._observer.decided(answer.record, started)
            self._observer.logged(request, answer.record, reply.status, started)
        headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [] if request.method == "HEAD" else [reply.body]

    def decide_rule(self, credentials: Credentials, rule: AccessRule) -> AccessOutcome:
        """:meth:`AccessService.check_rule`'s verdict (a per-view rule: :mod:`gateway.flask`),
        from memory on this thread when it can be, else from the loop thread."""
        return self._decide(
            lambda service, soon: service.peek_rule(credentials, rule, schedule=soon),
            lambda service: service.check_rule(credentials, rule),
        )

    # --- the loop thread: lazy, one per process, stopped at exit --------------------------------

    def _loop_thread(self) -> _LoopThread:
        loop = self._loop
        if loop is not None and not loop.failed and loop.pid == os.getpid():
            return loop
        with self._lock:
            loop = self._loop
            if loop is not None and loop.pid != os.getpid():
                self._forked()  # a fork that bypassed os.register_at_fork
            elif loop is not None and loop.failed:
                self._loop = None  # it logged why; the next request tries again
            if self._loop is None:
                self._loop = _LoopThread(self.settings, self.metrics, self._clock)
            return self._loop

    def _forked(self) -> None:
        """In a forked child: forget the parent's loop thread (it does not exist here)."""
        self._lock = threading.Lock()
        if self._loop is not None:
            self._abandoned.append(self._loop)
            self._loop = None

    def close(self, timeout: float = EXIT_TIMEOUT) -> bool:
        """Close the runtime and stop the loop thread (a later request starts them again);
        False if that did not finish within ``timeout`` seconds."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or loop.pid != os.getpid():
            return True
        return loop.stop(timeout)

    def _at_exit(self) -> None:
        if not self.close(EXIT_TIMEOUT):
            log.warning("the gateway runtime did not close within %s s at exit", EXIT_TIMEOUT)


class _Logged:
    """The app's response body, passed through chunk by chunk; the access-log line is written
    when the server closes it (the response is done)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done()


def _default_timeout(settings: Settings) -> float:
    """Longer than the service's own worst case (a session validation and an access check,
    each with every retry), so its verdict arrives first; this only bounds a stuck loop."""
    c = settings.platform
    return 2 * (c.request_timeout * (c.max_retries + 1) + c.retry_backoff_max * c.max_retries) + 1


def _call(ref: weakref.ref[PaywallMiddleware], method: Callable[[PaywallMiddleware], None]) -> None:
    middleware = ref()
    if middleware is not None:
        method(middleware)
