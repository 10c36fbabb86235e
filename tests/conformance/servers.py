"""Real servers for tests that outlive one test's event loop: an aiohttp app served by a loop in
a daemon thread of its own (the platform simulator, proxy mode's gateway and content server),
and a server subprocess (uvicorn, gunicorn) waited for and stopped within bounds.

A thread-served app is reachable from forked children and subprocesses alike, and from sync
tests; module-scoped fixtures start each server once for many tests.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.resources import sandbox_seed
from gateway.sandbox.app import STATE, SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from tests.conftest import REPO_ROOT, free_port

API_TOKEN = "sandbox-api-token"
PLAIN = "demo-session-plain"  # customer 100001, holds "premium"
NO_RIGHTS = "demo-session-no-rights"
START_SECONDS = 20.0
STOP_SECONDS = 10.0


class ThreadedServer:
    """``app`` on a free loopback port, served by an event loop in a daemon thread."""

    def __init__(self, app: web.Application, name: str = "test-server") -> None:
        self.app = app
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                self._loop.run_until_complete(site.start())
            except BaseException as exc:  # reported to the starting thread
                failed.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        if not started.wait(START_SECONDS) or failed:
            raise RuntimeError(f"{name} did not start: {failed}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(STOP_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_SECONDS)


class ThreadedSimulator(ThreadedServer):
    """The platform simulator (real time, seeded at start)."""

    def __init__(self) -> None:
        seed = load_data(sandbox_seed(), datetime.now(UTC))
        super().__init__(create_sandbox(seed, SandboxOptions(api_token=API_TOKEN)), "simulator")

    @property
    def base_url(self) -> str:
        return f"{self.base}/api/v3.0"

    def platform_down(self, down: bool = True) -> None:
        self.app[STATE].options.error_rate = 1.0 if down else 0.0

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(body).encode(),
            headers={"X-plenigo-token": API_TOKEN, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def transfer_token(self, session: str = PLAIN) -> str:
        token: str = self._post("/sessions/transferToken", {"customerSession": session})[
            "transferToken"
        ]
        return token

    def fresh_session(self, customer_id: str = "100001") -> str:
        """A session no gateway has seen yet (so nothing about it is cached)."""
        token: str = self._post(f"/sessions/{customer_id}", {})["customerSession"]
        return token


def config_toml(sections: dict[str, Any]) -> str:
    """Settings sections (``routes`` a list of tables) as a TOML file's text."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(element) for element in item) + "]"
        return json.dumps(item)

    lines: list[str] = []
    for name, table in sections.items():
        if name == "routes":
            continue
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value(item)}" for key, item in table.items())
    for route in sections.get("routes", ()):
        lines.append("[[routes]]")
        lines.extend(f"{key} = {value(item)}" for key, item in route.items())
    return "\n".join(lines) + "\n"


class ServerProcess:
    """A server subprocess listening on ``port``; output in ``log``."""

    def __init__(
        self, argv: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.log = log
        base = {key: value for key, value in os.environ.items() if not key.startswith("PAYWALL_")}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                list(argv),
                cwd=REPO_ROOT,
                env={**base, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{argv[0]} did not start:\n{self.output()}", pytrace=False)
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL past the bound; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(STOP_SECONDS)


def raw_request(
    port: int, target: str, lines: Sequence[tuple[str, str]] = (), method: str = "GET"
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request to 127.0.0.1:``port``: ``target`` sent as it is (no re-encoding), header
    lines as they are (repeated names stay separate lines)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in lines:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def app_requests(log: Path) -> list[dict[str, Any]]:
    """What a test app received, from its JSON-lines log (tests/conformance/apps_*.py)."""
    if not log.exists():
        return []
    lines = log.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
