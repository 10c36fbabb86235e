"""A new machine, for real: the built wheel, installed (not editable) into a fresh venv, runs.

The wheel is built from a copy of the sources (``pip wheel --no-deps``, with build isolation:
setuptools as ``[build-system]`` asks, from PyPI), so the test neither writes ``build/`` into the
checkout nor picks up stale files from it. A fresh venv made in ``tmp_path`` installs it; its
dependencies come from PyPI (through pip's cache when it has them). Then, from a directory
outside the repository and with the fresh venv's own ``paywall-gateway``:

- ``sandbox`` without ``--data`` starts on its packaged seed data and validates a seeded
  customer's session;
- ``serve`` in proxy mode in front of a small upstream, with that sandbox as the platform and
  ``login_redirect = false``, answers a premium page without a session with the packaged
  paywall page (401), a customer without the access right with it too (403), and forwards a
  subscriber.

Nothing is skipped: when pip cannot reach PyPI the test fails saying so. Every step is bounded
in time and every process is killed at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import REPO_ROOT, free_port

BUILD_TIMEOUT = 300.0
VENV_TIMEOUT = 120.0
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
RESOURCES = ("gateway/resources/paywall.html", "gateway/resources/sandbox-data.json")
# A line of the packaged paywall page that no built-in fallback would produce.
TEMPLATE_MARKER = "The paywall page of paywall-gateway"
# What pip prints when it cannot talk to the index (DNS, refused, proxy, TLS, timeout).
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "SSLError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point the fresh venv back at this checkout
    or its .venv (PYTHONPATH, VIRTUAL_ENV, coverage hooks) or change the gateway's settings."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {
        key: value
        for key, value in os.environ.items()
        if key not in dropped
        and not key.startswith(("PAYWALL_", "COV_CORE_", "COVERAGE_", "PYTEST_"))
    }


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def _pip(args: list[str], *, what: str, timeout: float, cwd: Path) -> None:
    """Run a pip command; fail with pip's output (and a plain word about PyPI when that is the
    cause) if it fails or takes longer than ``timeout``."""
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = f"{_text(exc.stdout)[-3000:]}\n{_text(exc.stderr)[-5000:]}"
        pytest.fail(
            f"{what} did not finish within {timeout:.0f}s: is PyPI slow or unreachable? "
            f"This test needs it (or pip's cache) for the wheel's dependencies.\n{output}",
            pytrace=False,
        )
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.fail(
                f"{what} failed: pip could not reach PyPI (or the index it is configured "
                f"with). This test builds the wheel with setuptools from PyPI and installs "
                f"the gateway's dependencies from there (pip's cache is used when it has "
                f"them); give the machine access to PyPI. pip said:\n{output}",
                pytrace=False,
            )
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{output}", pytrace=False)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed (not editable); its bin/ directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "gateway",
        source / "gateway",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = root / "dist"
    _pip(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)],
        what="building the wheel (pip wheel --no-deps)",
        timeout=BUILD_TIMEOUT,
        cwd=root,
    )
    wheels = sorted(dist.glob("paywall_gateway-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
    for resource in RESOURCES:
        assert resource in names, f"{resource} is not in {wheels[0].name}"
    assert not any(name.startswith("config/") for name in names), sorted(names)

    venv = root / "venv"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            cwd=root,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=VENV_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"python -m venv failed:\n{exc.stdout}\n{exc.stderr}", pytrace=False)
    bin_dir = venv / "bin"
    _pip(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])],
        what="installing the wheel into a fresh venv",
        timeout=INSTALL_TIMEOUT,
        cwd=root,
    )
    return bin_dir


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the repository, with no config/ of its own."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    assert not directory.resolve().is_relative_to(REPO_ROOT)
    return directory


class Processes:
    """Child processes, each logging to a file; all killed by :meth:`stop_all`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args, cwd=cwd, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
        self.running.append((name, process, log))
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def wait_http(self, name: str, port: int, path: str) -> None:
        """Until GET ``path`` answers 200; fails with the log when the process dies first."""
        process = next(p for n, p, _ in self.running if n == name)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"{name} exited ({process.returncode}) before answering:\n{self.log(name)}",
                    pytrace=False,
                )
            try:
                if get(port, path)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        pytest.fail(f"{name} did not answer {path} within {START_TIMEOUT}s:\n{self.log(name)}")

    def stop_all(self) -> None:
        for _, process, _ in self.running:
            if process.poll() is None:
                process.terminate()
        for _, process, log in self.running:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    """One GET on loopback, redirects not followed: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


class _Upstream(BaseHTTPRequestHandler):
    """The content server: echoes the decision headers the gateway set on the request."""

    def do_GET(self) -> None:
        customer, access = (self.headers.get(f"X-Paywall-{h}") for h in ("Customer-Id", "Access"))
        body = f"article for {customer} ({access})".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT)


def test_wheel_installs_and_runs_from_anywhere(
    fresh_venv: Path, outside: Path, processes: Processes, upstream: int
) -> None:
    # The package the fresh venv imports is its own copy, not this checkout.
    where = subprocess.run(
        [str(fresh_venv / "python"), "-c", "import gateway; print(gateway.__file__)"],
        cwd=outside,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT * 3,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(fresh_venv.parent), where
    assert "site-packages" in where, where

    # The simulator on its packaged seed data (no --data).
    platform = free_port()
    processes.start(
        "sandbox",
        [str(fresh_venv / "paywall-gateway"), "sandbox", "--port", str(platform)],
        cwd=outside,
    )
    validate = "/api/v3.0/sessions/validate?sessionToken=demo-session-plain"
    processes.wait_http("sandbox", platform, validate)
    status, _, body = get(platform, validate)
    assert status == 200, body
    assert json.loads(body)["customerId"] == "100001"
    assert "demo-session-plain (customer 100001)" in processes.log("sandbox")

    # The gateway with the default (packaged) paywall page.
    config = outside / "gateway.toml"
    config.write_text(
        f"""
[platform]
base_url = "http://127.0.0.1:{platform}/api/v3.0"

[server]
mode = "proxy"
upstream = "http://127.0.0.1:{upstream}"
login_url = "https://www.example.com/login"
login_redirect = false
cookie_secure = false

[[routes]]
path = "/premium/**"
access_rights = ["premium"]

[[routes]]
path = "/**"
public = true
""",
        encoding="utf-8",
    )
    port, admin = free_port(), free_port()
    processes.start(
        "gateway",
        [
            str(fresh_venv / "paywall-gateway"),
            *("serve", "--config", str(config)),
            *("--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin)),
        ],
        cwd=outside,
    )
    processes.wait_http("gateway", admin, "/readyz")

    html = {"Accept": "text/html"}
    status, headers, body = get(port, "/premium/the-long-read", html)
    assert status == 401, body
    assert headers["Content-Type"].startswith("text/html"), headers
    assert TEMPLATE_MARKER in body, body
    assert "Please log in" in body
    assert "https://www.example.com/login" in body

    no_rights = {**html, "Cookie": "paywall_session=demo-session-no-rights"}
    status, _, body = get(port, "/premium/the-long-read", no_rights)
    assert status == 403, body
    assert TEMPLATE_MARKER in body, body
    assert "Subscribers only" in body

    subscriber = {**html, "Cookie": "paywall_session=demo-session-plain"}
    status, _, body = get(port, "/premium/the-long-read", subscriber)
    assert status == 200, body
    assert body == "article for 100001 (granted)"
