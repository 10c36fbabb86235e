"""The WSGI middleware under a real gunicorn, for what only it has: the Flask per-view
decorator, ``--preload`` (the middleware is built in the master and each forked worker starts
its own loop thread), requests spread over both workers, and a clean shutdown. The rows every
driver shares are tests/conformance/test_drivers.py.

gunicorn (gthread, 2 workers x 4 threads) serves the Flask app of
tests/conformance/apps_wsgi.py behind PaywallMiddleware, against the platform simulator on
loopback. ``ROWS``: a request, its status, and what the app saw of the decision (None when
the app must not be reached)."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gunicorn
import pytest

from tests.conformance.servers import ServerProcess, app_requests, raw_request
from tests.conftest import free_port
from tests.wsgi.conftest import (
    NO_RIGHTS,
    PLAIN,
    ThreadedSimulator,
    config_toml,
    settings_sections,
)

Lines = tuple[tuple[str, str], ...]


@dataclass
class Gunicorn:
    port: int
    app_log: Path
    server_log: Path
    simulator: ThreadedSimulator

    def request(
        self, target: str, lines: Lines = (), method: str = "GET"
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """``target`` sent as it is (no re-encoding), with header lines as they are."""
        return raw_request(self.port, target, lines, method)

    def received(self) -> list[dict[str, Any]]:
        return app_requests(self.app_log)

    def fresh_session(self, customer_id: str = "100001") -> str:
        """A session the gateway has never seen (so nothing about it is cached)."""
        return self.simulator.fresh_session(customer_id)


def gunicorn_command(port: int) -> list[str]:
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--worker-class",
        "gthread",
        "--workers",
        "2",
        "--threads",
        "4",
        "--preload",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
    ]
    if gunicorn.version_info >= (25, 1):  # one control socket per user by default: not ours
        command.append("--no-control-socket")
    return [*command, "tests.conformance.apps_wsgi:create_app()"]


@pytest.fixture(scope="module")
def server(
    simulator: ThreadedSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    workdir = tmp_path_factory.mktemp("gunicorn")
    config = workdir / "gateway.toml"
    config.write_text(config_toml(settings_sections(simulator)), encoding="utf-8")
    port = free_port()
    app_log = workdir / "app.jsonl"
    env = {"PAYWALL_TEST_CONFIG": str(config), "PAYWALL_TEST_APP_LOG": str(app_log)}
    server = ServerProcess(gunicorn_command(port), port, workdir / "server.log", env)
    try:
        yield Gunicorn(port, app_log, server.log, simulator)
    finally:
        code = server.stop()  # SIGTERM, then SIGKILL past the bound: a non-zero code
    output = server.output()
    assert code == 0, output
    for sign in ("Traceback", "Unclosed", "Task was destroyed", "did not close"):
        assert sign not in output, output


@pytest.fixture
def app_log(server: Gunicorn) -> None:
    """Each test sees only what the app received during it."""
    server.app_log.unlink(missing_ok=True)
    return


# --- the table ----------------------------------------------------------------------------------

COOKIE_PLAIN = ("Cookie", f"paywall_session={PLAIN}")
COOKIE_NO_RIGHTS = ("Cookie", f"paywall_session={NO_RIGHTS}")
JSON = ("Accept", "application/json")
HTML = ("Accept", "text/html")
PUBLIC = {"x-paywall-access": "public", "x-paywall-cache": "none"}
GRANTED = {"x-paywall-access": "granted", "x-paywall-customer-id": "100001"}


@dataclass(frozen=True)
class Row:
    """One request and the answer: ``app`` is what the app must have seen of the decision
    (``X-Paywall-*`` values; the same in ``environ["paywall.decision"]``), None: not asked."""

    target: str
    lines: Lines
    status: int
    app: dict[str, str] | None = None
    content_type: str | None = None


ROWS = {
    "view rule granted": Row("/flask/premium-view", (COOKIE_PLAIN,), 200, GRANTED),
    "view rule denied": Row("/flask/premium-view", (COOKIE_NO_RIGHTS, JSON), 403, None),
    "view rule unauthenticated json": Row("/flask/premium-view", (JSON,), 401, None),
    "view rule unauthenticated": Row("/flask/premium-view", (HTML,), 303, None),
}


@pytest.mark.usefixtures("app_log")
@pytest.mark.parametrize("row", list(ROWS))
def test_row(server: Gunicorn, row: str) -> None:
    expected = ROWS[row]
    status, headers, body = server.request(expected.target, expected.lines)
    assert status == expected.status, (row, body[:300])
    if expected.content_type is not None:
        assert (headers["Content-Type"] or "").startswith(expected.content_type)
    received = server.received()
    if expected.app is None:
        assert received == [], row
        return
    assert len(received) == 1, (row, received)
    seen = received[0]
    for name, value in expected.app.items():
        assert seen["headers"].get(name) == value, (row, name, seen)
    assert seen["decision"]["access"] == expected.app["x-paywall-access"]
    assert seen["decision"]["customer_id"] == expected.app.get("x-paywall-customer-id")
    # No spelling of a gateway header but the gateway's own reaches the app.
    names = [name for name in seen["headers"] if name.replace("_", "-").startswith("x-paywall-")]
    assert sorted(names) == sorted(n for n in names if "_" not in n)
    assert set(names) <= {"x-paywall-access", "x-paywall-cache", "x-paywall-customer-id"}
    assert "paywall_session" not in json.dumps(seen)  # the session stays at the gateway


@pytest.mark.usefixtures("app_log")
def test_many_requests_over_both_workers(server: Gunicorn) -> None:
    session = server.fresh_session()
    cookie = ("Cookie", f"paywall_session={session}")
    for _ in range(40):  # new connections: both workers, each with its own loop and caches
        status, _, _ = server.request("/premium/a", (cookie,))
        assert status == 200
    decisions = [seen["decision"] for seen in server.received()]
    assert len(decisions) == 40
    assert {d["customer_id"] for d in decisions} == {"100001"}
    assert {d["cache"] for d in decisions} <= {"hit", "miss"}
    assert sum(d["cache"] == "miss" for d in decisions) <= 2  # one per worker at most
