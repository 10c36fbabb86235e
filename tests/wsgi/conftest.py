"""The WSGI middleware's test bench: the platform simulator on loopback (in a thread of this
process, so a forked child and a gunicorn subprocess can reach it too), gateway settings for
it, and a WSGI request made in-process with an environ as a server would build it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults

import pytest

from gateway.config import Settings
from gateway.wsgi import PaywallMiddleware
from tests.conformance.servers import ThreadedSimulator, config_toml

__all__ = ["ThreadedSimulator", "config_toml"]
from tests.service.conftest import ManualClock

API_TOKEN = "sandbox-api-token"
PLAIN = "demo-session-plain"  # customer 100001, holds "premium"
NO_RIGHTS = "demo-session-no-rights"
LOGIN_URL = "https://login.example/sso"
APP_CACHE_CONTROL = "public, max-age=60, s-maxage=600"
ROUTES: list[dict[str, Any]] = [
    {"path": "/premium/**", "methods": ["*"], "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/**", "methods": ["GET", "HEAD", "POST"], "public": True},
]


@pytest.fixture(scope="session")
def simulator() -> Iterator[ThreadedSimulator]:
    sim = ThreadedSimulator()
    try:
        yield sim
    finally:
        sim.stop()


def settings_sections(simulator: ThreadedSimulator) -> dict[str, Any]:
    return {
        "platform": {"base_url": simulator.base_url, "api_token": API_TOKEN, "max_retries": 0},
        "server": {"cookie_secure": False, "login_url": LOGIN_URL},
        "routes": ROUTES,
    }


def make_settings(simulator: ThreadedSimulator, **overrides: dict[str, Any]) -> Settings:
    sections = settings_sections(simulator)
    for name, values in overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    return Settings(**sections)


@dataclass
class Result:
    """What a WSGI server would have sent."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def environ_for(
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    raw_uri: bool = True,
    extra: dict[str, Any] | None = None,
) -> WSGIEnvironment:
    """The environ a server builds for ``target``: PATH_INFO decoded (latin-1), the raw
    target in RAW_URI as gunicorn has it (unless ``raw_uri`` is False), HTTP_* headers."""
    path, _, query = target.partition("?")
    environ: WSGIEnvironment = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
    }
    if raw_uri:
        environ["RAW_URI"] = target
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.update(extra or {})
    setup_testing_defaults(environ)
    return environ


def call(app: WSGIApplication, target: str, **kwargs: Any) -> Result:
    """One request through ``app``, in this thread, body read and closed as a server does."""
    return call_environ(app, environ_for(target, **kwargs))


def call_environ(app: WSGIApplication, environ: WSGIEnvironment) -> Result:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    body = app(environ, start_response)
    chunks: list[bytes] = []
    try:
        for chunk in body:
            chunks.append(chunk)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, headers = started[-1]
    return Result(int(status.split()[0]), headers, b"".join(chunks), chunks)


class EchoApp:
    """A tiny WSGI app: remembers every environ it got, answers 200 with a shared-cache
    Cache-Control (the middleware must make granted answers private)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        with self._lock:
            self.seen.append(dict(environ))
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Cache-Control", APP_CACHE_CONTROL)]
        )
        return [b"app"]

    @property
    def last(self) -> dict[str, Any]:
        return self.seen[-1]


PLAIN_COOKIE = {"Cookie": f"theme=dark; paywall_session={PLAIN}; lang=de"}
NO_RIGHTS_COOKIE = {"Cookie": f"paywall_session={NO_RIGHTS}"}

Make = Callable[..., tuple[PaywallMiddleware, EchoApp]]


@pytest.fixture
def make(simulator: ThreadedSimulator) -> Iterator[Make]:
    """``make(**overrides)``: a middleware around a fresh EchoApp; closed after the test."""
    made: list[PaywallMiddleware] = []

    def build(
        timeout: float | None = None, clock: ManualClock | None = None, **overrides: Any
    ) -> tuple[PaywallMiddleware, EchoApp]:
        app = EchoApp()
        settings = make_settings(simulator, **overrides)
        middleware = PaywallMiddleware(app, config=settings, timeout=timeout, clock=clock)
        made.append(middleware)
        return middleware, app

    yield build
    for middleware in made:
        assert middleware.close(10), "the runtime did not close"


def platform_calls(middleware: PaywallMiddleware, endpoint: str) -> float:
    return sum(
        middleware.metrics.value(
            "paywall_platform_requests_total", {"endpoint": endpoint, "status": status}
        )
        for status in ("200", "401", "404", "500")
    )


class CountingSubmits:
    """Counts asyncio.run_coroutine_threadsafe calls: every trip to the loop thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = asyncio.run_coroutine_threadsafe

        def counted(coroutine: Any, loop: asyncio.AbstractEventLoop) -> Any:
            self.count += 1
            return original(coroutine, loop)

        monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", counted)
