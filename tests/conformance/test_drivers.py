"""One table of requests, run through every driver of the front-end policy; every driver must
give the same answers.

Drivers, each a real server on loopback in front of the platform simulator:

* ``proxy``: the gateway's aiohttp app in proxy mode before an aiohttp content server;
* ``asgi-starlette`` / ``asgi-fastapi``: :class:`gateway.asgi.PaywallMiddleware` around a
  Starlette app and a FastAPI app, under uvicorn;
* ``wsgi-flask``: :class:`gateway.wsgi.PaywallMiddleware` around a Flask app, under gunicorn
  (gthread, 2 workers x 4 threads).

The apps behind them behave alike (tests/conformance/apps_*.py): they answer JSON saying what
they received, log it to a file, stream ``/stream`` in chunks, and (ASGI, proxy) speak
WebSocket at ``/ws``. Each driver starts once for the module; every test sees only what the
app received during it. What only one driver has (lifespan, worker processes, the per-view
dependency and decorator) is tested in tests/asgi and tests/wsgi.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import gunicorn
import pytest
from yarl import URL

from gateway.config import Settings
from gateway.web.app import create_app
from tests.conformance.apps_aiohttp import content_app
from tests.conformance.servers import (
    API_TOKEN,
    NO_RIGHTS,
    PLAIN,
    ServerProcess,
    ThreadedServer,
    ThreadedSimulator,
    app_requests,
    config_toml,
    raw_request,
)
from tests.conftest import free_port

LOGIN_URL = "https://login.example/sso"
ROUTES: list[dict[str, Any]] = [
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/ws", "access_rights": ["premium"]},
    {"path": "/**", "public": True},
]
BIN = Path(sys.executable).parent
DRIVERS = ["proxy", "asgi-starlette", "asgi-fastapi", "wsgi-flask"]
WEBSOCKET_DRIVERS = ["proxy", "asgi-fastapi", "asgi-starlette"]
APP_CACHE_CONTROL = "public, max-age=60, s-maxage=600"
CHUNKS = 5
CHUNK_INTERVAL = 0.2

Lines = Sequence[tuple[str, str]]


@dataclass
class Target:
    """One driver, running: where to send requests, what its app received, the simulator."""

    name: str
    port: int
    app_log: Path
    platform: ThreadedSimulator

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, target: str, lines: Lines = ()) -> tuple[int, Message, bytes]:
        """One GET with exactly these header lines (sent as given, no re-encoding)."""
        return raw_request(self.port, target, lines)

    def received(self) -> list[dict[str, Any]]:
        return app_requests(self.app_log)


def gateway_sections(platform: ThreadedSimulator) -> dict[str, Any]:
    return {
        "platform": {
            "base_url": platform.base_url,
            "api_token": API_TOKEN,
            "max_retries": 0,
            # The platform-down test must not leave an open breaker to the tests after it.
            "breaker_failures": 0,
        },
        "server": {"cookie_secure": False, "login_url": LOGIN_URL},
        "logging": {"access_log": False},
        "routes": ROUTES,
    }


def server_command(name: str, port: int) -> list[str]:
    if name == "wsgi-flask":
        command = [
            str(BIN / "gunicorn"),
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
        ]
        if gunicorn.version_info >= (25, 1):  # one control socket per user by default
            command.append("--no-control-socket")
        return [*command, "tests.conformance.apps_wsgi:create_app()"]
    app = {"asgi-starlette": "starlette_app", "asgi-fastapi": "fastapi_app"}[name]
    return [
        str(BIN / "uvicorn"),
        f"tests.conformance.apps_asgi:{app}",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]


@pytest.fixture(scope="module")
def platform() -> Iterator[ThreadedSimulator]:
    simulator = ThreadedSimulator()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture(scope="module", params=DRIVERS)
def driver(
    request: pytest.FixtureRequest,
    platform: ThreadedSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(name)
    app_log = workdir / "app.jsonl"
    sections = gateway_sections(platform)
    if name == "proxy":
        content = ThreadedServer(content_app(app_log), "content")
        sections["server"]["upstream"] = content.base + "/"
        gateway = ThreadedServer(create_app(Settings(**sections)), "gateway")
        try:
            yield Target(name, gateway.port, app_log, platform)
        finally:
            gateway.stop()
            content.stop()
        return
    config = workdir / "gateway.toml"
    config.write_text(config_toml(sections), encoding="utf-8")
    port = free_port()
    env = {"PAYWALL_TEST_CONFIG": str(config), "PAYWALL_TEST_APP_LOG": str(app_log)}
    server = ServerProcess(server_command(name, port), port, workdir / "server.log", env)
    try:
        yield Target(name, port, app_log, platform)
    finally:
        code = server.stop()
        output = server.output()
        print(f"--- {name} ---\n{output}")
    # uvicorn ends on SIGTERM with -15 once it has shut down; gunicorn with 0.
    assert code in (0, -15), output
    assert "Traceback" not in output


@pytest.fixture
def target(driver: Target) -> Iterator[Target]:
    """The driver, with the app log emptied and the platform up: each test on its own."""
    driver.app_log.unlink(missing_ok=True)
    driver.platform.platform_down(False)
    try:
        yield driver
    finally:
        driver.platform.platform_down(False)


# --- the table ----------------------------------------------------------------------------------

COOKIE_PLAIN = ("Cookie", f"paywall_session={PLAIN}")
COOKIE_NO_RIGHTS = ("Cookie", f"paywall_session={NO_RIGHTS}")
JSON = ("Accept", "application/json")
HTML = ("Accept", "text/html")
PUBLIC = {"x-paywall-access": "public", "x-paywall-cache": "none"}
GRANTED = {"x-paywall-access": "granted", "x-paywall-customer-id": "100001"}


@dataclass(frozen=True)
class Row:
    """One request and what every driver must answer. ``app``: what the app must have seen of
    the decision (``X-Paywall-*`` values, the same as its request.state / environ decision);
    None: the app must not be asked."""

    target: str
    lines: tuple[tuple[str, str], ...]
    status: int
    app: dict[str, str] | None = None
    content_type: str | None = None


ROWS = {
    "public page": Row("/news?x=1", (), 200, PUBLIC),
    "granted": Row("/premium/a", (COOKIE_PLAIN,), 200, GRANTED),
    "denied page": Row("/premium/a", (COOKIE_NO_RIGHTS, HTML), 403, None, "text/html"),
    "denied json": Row("/premium/a", (COOKIE_NO_RIGHTS, JSON), 403, None, "application/json"),
    "unauthenticated": Row("/premium/a", (HTML,), 303),
    "unauthenticated json": Row("/premium/a", (JSON,), 401, None, "application/json"),
    "invalid transfer token": Row("/premium/a?transferToken=nonsense", (HTML,), 303),
    "invalid transfer token json": Row(
        "/premium/a?transferToken=nonsense", (JSON,), 401, None, "application/json"
    ),
    "malformed cookie": Row(
        "/premium/a", (("Cookie", f"paywall_session=x; paywall_session={PLAIN}"),), 400
    ),
    "cookie in another spelling": Row("/premium/a", (("Cookie", f"PAYWALL_SESSION={PLAIN}"),), 400),
    "ambiguous path": Row("/premium%2Fa", (COOKIE_PLAIN,), 400),
    "path parameter": Row("/premium;x/a", (COOKIE_PLAIN,), 400),
    "spoofed decision headers": Row(
        "/news",
        (
            ("X-Paywall-Access", "granted"),
            ("X_Paywall_Access", "granted"),
            ("X-Paywall-Customer-Id", "999"),
            ("X_Paywall_Customer_Id", "999"),
        ),
        200,
        PUBLIC,
    ),
    "spoofed customer on a grant": Row(
        "/premium/a", (COOKIE_PLAIN, ("X-Paywall-Customer-Id", "999")), 200, GRANTED
    ),
    "unknown gateway endpoint": Row("/_paywall/nothing", (), 404),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_row(target: Target, row: str) -> None:
    expected = ROWS[row]
    status, headers, body = target.get(expected.target, expected.lines)
    assert status == expected.status, (target.name, row, body[:300])
    if expected.content_type is not None:
        assert (headers["Content-Type"] or "").startswith(expected.content_type)
    received = target.received()
    if expected.app is None:
        assert received == [], (target.name, row)
        return
    assert len(received) == 1, (target.name, row, received)
    seen = received[0]
    for name, value in expected.app.items():
        assert seen["headers"].get(name) == value, (target.name, row, name, seen)
    # Whatever the app reads the decision from, it agrees with the headers.
    assert seen["decision"]["access"] == expected.app["x-paywall-access"]
    assert seen["decision"]["customer_id"] == expected.app.get("x-paywall-customer-id")
    # No spelling of a gateway header but the gateway's own reaches the app.
    names = [name for name in seen["headers"] if name.replace("_", "-").startswith("x-paywall-")]
    assert set(names) <= {"x-paywall-access", "x-paywall-cache", "x-paywall-customer-id"}
    assert "paywall_session" not in json.dumps(seen)  # the session stays at the gateway


def test_granted_content_is_private_public_keeps_its_cache_control(target: Target) -> None:
    _, granted, _ = target.get("/premium/a", [COOKIE_PLAIN])
    assert granted.get_all("Cache-Control") == ["private, max-age=60"]
    _, public, _ = target.get("/news")
    assert public.get_all("Cache-Control") == [APP_CACHE_CONTROL]
    _, denied, _ = target.get("/premium/a", [COOKIE_NO_RIGHTS])
    assert denied.get_all("Cache-Control") == ["no-store"]


def test_unauthenticated_browser_goes_to_the_login(target: Target) -> None:
    status, headers, _ = target.get("/premium/a?page=2", [HTML])
    assert status == 303
    back = quote(f"http://127.0.0.1:{target.port}/premium/a?page=2", safe="")
    assert headers["Location"] == f"{LOGIN_URL}?return_to={back}"
    assert target.received() == []


def test_transfer_token_hand_off(target: Target) -> None:
    token = target.platform.transfer_token()
    status, headers, _ = target.get(f"/premium/a?page=2&transferToken={token}")
    assert (status, headers["Location"]) == (303, "/premium/a?page=2")
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("paywall_session=")
    assert "HttpOnly" in cookie
    session = cookie.partition("=")[2].partition(";")[0]
    status, _, _ = target.get("/premium/a?page=2", [("Cookie", f"paywall_session={session}")])
    assert status == 200
    assert [seen["path"] for seen in target.received()] == ["/premium/a?page=2"]
    # Spent: the same token again is an invalid one, which on a protected page means the login.
    status, headers, _ = target.get(f"/premium/a?transferToken={token}", [HTML])
    assert status == 303
    assert headers["Location"].startswith(LOGIN_URL)
    # The login page's hand-off endpoint, with a second token.
    second = target.platform.transfer_token()
    status, headers, _ = target.get(f"/_paywall/transfer?transferToken={second}&return_to=/b")
    assert (status, headers["Location"]) == (303, "/b")
    assert (headers["Set-Cookie"] or "").startswith("paywall_session=")
    logged = target.app_log.read_text(encoding="utf-8")
    assert token not in logged
    assert second not in logged
    assert all("transfer" not in seen["path"].lower() for seen in target.received())


def test_platform_down_with_nothing_cached_is_a_503(target: Target) -> None:
    session = target.platform.fresh_session()
    target.platform.platform_down()
    status, headers, body = target.get("/premium/a", [("Cookie", f"paywall_session={session}")])
    assert status == 503, body[:300]
    assert headers["Retry-After"] == "5"
    status, _, body = target.get("/premium/b", [("Cookie", f"paywall_session={session}"), JSON])
    assert status == 503
    assert json.loads(body)["error"] == "unavailable"
    assert target.received() == []


def test_a_streamed_answer_arrives_chunk_by_chunk(target: Target) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        connection.request("GET", "/stream")
        response = connection.getresponse()
        assert response.status == 200
        arrivals = []
        for _ in range(CHUNKS):
            arrivals.append((time.monotonic(), response.readline()))
        assert response.read() == b""
    finally:
        connection.close()
    assert [line for _, line in arrivals] == [f"chunk-{i}\n".encode() for i in range(CHUNKS)]
    # The app writes the chunks 0.2 s apart: a response held back to the end would deliver
    # them together, a streamed one spreads them over about 0.8 s (0.6 s when a server sends
    # the first two in one go, as uvicorn sometimes does).
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread > 2 * CHUNK_INTERVAL, [when for when, _ in arrivals]


# WSGI has no WebSocket: the drivers that speak it.
@pytest.mark.parametrize("driver", WEBSOCKET_DRIVERS, indirect=True)
async def test_websocket_is_gated_by_the_same_routes(target: Target) -> None:
    url = URL(target.base + "/ws", encoded=True)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http_session:
        async with http_session.ws_connect(url, headers=[COOKIE_PLAIN]) as ws:
            decision = await ws.receive_json(timeout=5)
            assert (decision["access"], decision["customer_id"]) == ("granted", "100001")
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "hello"
        for lines in ([JSON], [COOKIE_NO_RIGHTS, JSON]):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with http_session.ws_connect(url, headers=lines):
                    pass
            assert refused.value.status in (401, 403), lines
    assert [seen["path"] for seen in target.received()] == ["/ws"]
