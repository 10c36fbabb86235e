"""Shared test fixtures: an event-loop blocking guard and real servers on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import access_log
from gateway.access_log import AccessLog
from gateway.compiled import MODULES, compiled_modules
from gateway.logs import Redactor

REPO_ROOT = Path(__file__).resolve().parents[1]

# A callback that holds the event loop longer than this fails the test: the gateway serves
# every visitor from one loop, so a blocking call there stalls all of them. A coarse net over
# the whole suite: on a busy 2-core machine (redis-servers, nginx and gateway subprocesses
# starting beside the test) an honest step was seen to take 0.28 s of wall time, so this stays
# above that; tests/web/test_event_loop.py holds the gateway's handlers to a much tighter bound.
BLOCKING_THRESHOLD = 0.5


def pytest_configure(config: pytest.Config) -> None:
    """Which build the run tests: ``make test-compiled`` sets GATEWAY_EXPECT_COMPILED=1 and
    must import every module of gateway/compiled.py compiled; any other run none (a compiled
    module left beside the source would silently stand in for the code being tested)."""
    found = compiled_modules()
    if os.environ.get("GATEWAY_EXPECT_COMPILED") == "1":
        missing = sorted(set(MODULES) - set(found))
        if missing:
            raise pytest.UsageError(f"the compiled build is expected; not compiled: {missing}")
    elif found:
        raise pytest.UsageError(f"compiled modules imported in a pure-Python run: {found}")


def _guarded_loop() -> asyncio.AbstractEventLoop:
    """Test loops run in debug mode (``asyncio_debug`` in pyproject.toml), which logs every
    callback slower than ``slow_callback_duration``; the guard below turns that into a failure."""
    loop = asyncio.new_event_loop()
    loop.slow_callback_duration = BLOCKING_THRESHOLD
    return loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"guarded": _guarded_loop}


class LoopBlockGuard(logging.Handler):
    """Collects asyncio's "Executing <callback> took N seconds" debug-mode warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.blocked: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.blocked.append(message)


@pytest.fixture(autouse=True)
def loop_block_guard() -> Iterator[LoopBlockGuard]:
    guard = LoopBlockGuard()
    logger = logging.getLogger("asyncio")
    logger.addHandler(guard)
    try:
        yield guard
    finally:
        logger.removeHandler(guard)
    if guard.blocked:
        pytest.fail("the event loop was blocked:\n" + "\n".join(guard.blocked), pytrace=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(name: str, debian_package: str) -> str:
    """The path of a server binary the tests need, or a failure saying what to install.

    Never a skip: a suite that silently skips its Redis or nginx tests proves nothing.
    """
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        pytest.fail(
            f"{name} is not installed; these tests need the real server. "
            f"On Debian/Ubuntu: sudo apt-get install {debian_package}",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port, for the whole session."""
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}", pytrace=False)
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


OPENAPI_SPEC = REPO_ROOT / "tests" / "contract" / "openapi-v3-gateway-subset.json"


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    """The platform's OpenAPI subset (tests/contract/): the contract client and simulator keep."""
    if not OPENAPI_SPEC.is_file():
        pytest.fail(f"the OpenAPI subset is missing at {OPENAPI_SPEC}", pytrace=False)
    spec: dict[str, Any] = json.loads(OPENAPI_SPEC.read_text(encoding="utf-8"))
    return spec


# --- the process's access log, captured -------------------------------------------------------


class RecordingAccessLog(AccessLog):
    """An access log that also keeps the raw values it was handed."""

    def __init__(self, stream: io.StringIO) -> None:
        super().__init__(Redactor(), stream)
        self.raw: list[tuple[Any, ...]] = []

    def log(self, *values: Any) -> None:
        self.raw.append(values)
        super().log(*values)


@dataclass
class AccessCapture:
    log: RecordingAccessLog
    stream: io.StringIO

    def text(self) -> str:
        """Everything written so far (after a flush)."""
        assert self.log.flush()
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far (after a flush), parsed."""
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def access_capture() -> Iterator[AccessCapture]:
    """The process's access log, into a string (and the raw values it was given)."""
    stream = io.StringIO()
    capture = AccessCapture(RecordingAccessLog(stream), stream)
    previous = access_log.current
    access_log.install(capture.log)
    try:
        yield capture
    finally:
        access_log.install(previous)
