"""Real processes on loopback: the platform simulator, redis-server and ``paywall-gateway serve``.

Every process writes its output to a log file under the test's ``tmp_path`` (nothing to drain,
nothing lost when a test fails) and is stopped when the test ends, whatever happened: SIGTERM,
then SIGKILL after a few seconds. Waits are polls with a deadline, never blocking calls on the
test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.sandbox.app import CALLS_PATH
from tests.conftest import free_port, require_binary

API_TOKEN = "integration-api-token"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
POLL = 0.02

ROUTES: list[dict[str, Any]] = [
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/**", "public": True},
]


def clean_env() -> dict[str, str]:
    """The environment without PAYWALL_* overrides a developer may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYWALL_")}


class Process:
    """A child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                cwd=cwd,
            )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (the gateway logs JSON lines)."""
        found = []
        for line in self.output().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def logged(self, msg: str) -> bool:
        """Whether a JSON log line with this ``msg`` was written."""
        return any(record.get("msg") == msg for record in self.records())

    async def wait_for(self, found: Callable[[], Any], what: str) -> Any:
        """Poll ``found()`` until it returns something truthy; fail if the process ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            result = found()
            if result:
                return result
            if not self.running:
                pytest.fail(
                    f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.output()}",
                    pytrace=False,
                )
            if loop.time() > deadline:
                pytest.fail(
                    f"{self.name}: no {what} within {START_TIMEOUT}s:\n{self.output()}",
                    pytrace=False,
                )
            await asyncio.sleep(POLL)

    async def wait_exit(self, within: float) -> int | None:
        """The exit code, or None if still running after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (code := self.popen.poll()) is None:
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(POLL)
        return code

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; SIGKILL if it does not end in time."""
        if self.running:
            self.popen.send_signal(signum)
        code = await self.wait_exit(STOP_TIMEOUT)
        if code is None:
            self.popen.kill()
            code = await self.wait_exit(STOP_TIMEOUT)
        assert code is not None, f"{self.name} (pid {self.popen.pid}) survived SIGKILL"
        return code


class Processes:
    """Starts processes for one test and stops every one of them at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Process] = []

    def start(self, name: str, argv: Sequence[str]) -> Process:
        process = Process(name, argv, self.tmp_path / f"{name}.log", self.tmp_path)
        self.started.append(process)
        return process

    async def stop_all(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.started))


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        await procs.stop_all()


# --- the platform simulator --------------------------------------------------------------------


@dataclass
class Simulator:
    process: Process
    base_url: str  # .../api/v3.0

    @property
    def calls_url(self) -> str:
        return self.base_url.rsplit("/api/", 1)[0] + CALLS_PATH

    async def calls(self, http: aiohttp.ClientSession, *, reset: bool = False) -> dict[str, int]:
        """Answered API requests per operation (and, with ``reset``, start again from zero)."""
        method = "DELETE" if reset else "GET"
        headers = {"X-plenigo-token": API_TOKEN}
        async with http.request(method, self.calls_url, headers=headers) as response:
            assert response.status == 200, await response.text()
            counts: dict[str, int] = (await response.json())["calls"]
            return counts


async def start_simulator(
    processes: Processes,
    *,
    port: int,
    latency: float,
    callback_url: str | None = None,
    callback_tries: int = 5,
) -> Simulator:
    """``python -m gateway sandbox`` on ``port``; returns once it prints its start-up line.

    With ``callback_url`` it posts the platform's callbacks there (``callback_tries`` tries each).
    """
    callbacks = [] if callback_url is None else ["--callback-url", callback_url]
    process = processes.start(
        "sandbox",
        [
            sys.executable,
            "-m",
            "gateway",
            "sandbox",
            "--port",
            str(port),
            "--api-token",
            API_TOKEN,
            "--latency",
            str(latency),
            "--callback-tries",
            str(callback_tries),
            *callbacks,
        ],
    )

    def base_url() -> str | None:
        for line in process.output().splitlines():
            if " platform API on " in line:
                return line.split(" platform API on ", 1)[1].split(" ", 1)[0]
        return None

    return Simulator(process, await process.wait_for(base_url, "its start-up line"))


# --- redis-server ------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server that a test can kill and start again on the same port."""

    def __init__(self, processes: Processes) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.processes = processes
        self.port = free_port()
        self.workdir = processes.tmp_path / "redis"
        self.workdir.mkdir(exist_ok=True)
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        self.starts += 1
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        process = self.process = self.processes.start(f"redis-{self.starts}", argv)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not await self._ping():
            if not process.running or loop.time() > deadline:
                pytest.fail(
                    f"redis-server did not start on port {self.port}:\n{process.output()}",
                    pytrace=False,
                )
            await asyncio.sleep(POLL)

    async def _ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            async with asyncio.timeout(1):
                return (await reader.readline()).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the clients."""
        assert self.process is not None
        await self.process.stop(signal.SIGKILL)


# --- the gateway -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return json.dumps(value)


def write_gateway_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    for route in ROUTES:
        lines.append("[[routes]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in route.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Gateway:
    process: Process
    port: int
    admin_port: int

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_paywall/auth"

    async def metrics(self, http: aiohttp.ClientSession) -> str:
        async with http.get(f"http://127.0.0.1:{self.admin_port}/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        text = await self.metrics(http)
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


async def start_gateway(
    processes: Processes,
    name: str,
    *,
    platform_url: str,
    redis_url: str,
    access: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    platform: dict[str, Any] | None = None,
    callbacks: dict[str, Any] | None = None,
    port: int | None = None,
) -> Gateway:
    """``python -m gateway serve`` in auth_request mode; returns once it listens.

    ``port`` is the public port (default: a free one); ``callbacks`` the ``[callbacks]`` section
    (default: none, the receiver is off).
    """
    port = port or free_port()
    config = write_gateway_config(
        processes.tmp_path / f"{name}.toml",
        {
            "platform": {"base_url": platform_url, "api_token": API_TOKEN, **(platform or {})},
            "access": access or {},
            "cache": {"redis_url": redis_url, **(cache or {})},
            **({} if callbacks is None else {"callbacks": callbacks}),
            "server": {
                "mode": "auth_request",
                "host": "127.0.0.1",
                "admin_host": "127.0.0.1",
                "cookie_secure": False,
                "shutdown_grace": 1.0,
            },
            # Warnings and errors only: one access line per request would cost the gateways
            # CPU that the load tests need.
            "logging": {"level": "info", "access_log": False},
        },
    )
    process = processes.start(
        name,
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--admin-port",
            "0",
        ],
    )

    def listening() -> dict[str, Any] | None:
        return next((r for r in process.records() if r.get("msg") == "listening"), None)

    record = await process.wait_for(listening, "its 'listening' log line")
    assert record["port"] == port
    return Gateway(process, port, record["admin_port"])


@pytest.fixture
async def redis_server(processes: Processes) -> RedisServer:
    """A private redis-server for this test only, running; stopped with the other processes."""
    server = RedisServer(processes)
    await server.start()
    return server
