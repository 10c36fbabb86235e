"""``paywall-gateway serve`` as a real process: serving, admin listener, graceful stop, bind errors.

The gateway runs in proxy mode with one public route in front of a small upstream started here,
so no platform is needed. Every wait is bounded; every process is killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.cli import build_parser, main, serve_settings
from gateway.compiled import compiled_modules
from tests.conftest import free_port

GATEWAY_BIN = Path(sys.executable).parent / "paywall-gateway"
START_TIMEOUT = 20.0
AiohttpServer = Callable[..., Awaitable[TestServer]]


# --- the upstream -----------------------------------------------------------------------------


@dataclass
class Upstream:
    port: int = 0
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    slow_finished: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


UPSTREAM = web.AppKey("upstream", Upstream)


async def fast(request: web.Request) -> web.Response:
    return web.Response(text=f"fast, access {request.headers.get('X-Paywall-Access')}")


async def slow(request: web.Request) -> web.Response:
    """Answers after ``?seconds=`` seconds; stops early when the gateway drops the connection."""
    upstream = request.app[UPSTREAM]
    seconds = float(request.query["seconds"])
    upstream.slow_started.set()
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return web.Response(status=499)
        await asyncio.sleep(0.02)
    upstream.slow_finished.append(seconds)
    return web.Response(text=f"slow {seconds}")


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    up = Upstream(port=free_port())
    app = web.Application()
    app[UPSTREAM] = up
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    await aiohttp_server(app, host="127.0.0.1", port=up.port)
    return up


# --- the gateway process ----------------------------------------------------------------------


def write_config(tmp_path: Path, upstream_url: str, *, grace: float, mode: str = "proxy") -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[platform]
base_url = "http://127.0.0.1:9/api/v3.0"

[server]
mode = "{mode}"
host = "127.0.0.1"
port = 8080
admin_host = "127.0.0.1"
admin_port = 0
upstream = "{upstream_url}"
shutdown_grace = {grace}
cookie_secure = false

[logging]
level = "info"
access_log = true

[[routes]]
path = "/**"
public = true
""",
        encoding="utf-8",
    )
    return config


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PAYWALL_")}


class GatewayProcess:
    """A running ``paywall-gateway serve`` whose stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def records(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    async def wait_for(self, msg: str, within: float = START_TIMEOUT) -> dict[str, Any]:
        """The first log record whose msg is ``msg``; fails when the process ends first."""
        try:
            async with asyncio.timeout(within):
                while True:
                    for record in self.records():
                        if record.get("msg") == msg:
                            return record
                    if self._reader.done():
                        await self.wait(within=5)
                        pytest.fail(
                            f"gateway exited ({self.proc.returncode}) before logging {msg!r}:\n"
                            f"{self.stderr}",
                            pytrace=False,
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"no {msg!r} log line within {within}s:\n{self.stderr}", pytrace=False)

    async def wait(self, within: float) -> int:
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        try:
            await self.wait(within=10)
        finally:
            self._reader.cancel()


@dataclass
class Running:
    process: GatewayProcess
    port: int
    admin_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"


StartGateway = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[StartGateway]:
    processes: list[GatewayProcess] = []

    async def start(*, grace: float = 5.0, mode: str = "proxy") -> Running:
        config = write_config(tmp_path, upstream.url, grace=grace, mode=mode)
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            str(GATEWAY_BIN),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(),
            cwd=tmp_path,
        )
        process = GatewayProcess(proc)
        processes.append(process)
        listening = await process.wait_for("listening")
        assert listening["port"] == port, "the --port override was not applied"
        assert listening["admin_port"] not in (0, 8081), "admin_port 0 must report the bound port"
        # The process runs the build this test run does (compiled or not: tests/conftest.py).
        assert listening["compiled"] == len(compiled_modules())
        return Running(process, port, listening["admin_port"])

    try:
        yield start
    finally:
        for process in processes:
            await process.kill()


async def connection_refused(port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def refused_within(port: int, seconds: float) -> bool:
    """Whether connections to ``port`` are refused within ``seconds`` (polling)."""
    deadline = time.monotonic() + seconds
    while not await connection_refused(port):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --- serving ----------------------------------------------------------------------------------


async def test_serves_requests_and_the_admin_endpoints(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(gateway.url("/fast")) as response:
            assert response.status == 200
            assert await response.text() == "fast, access public"  # decided by the gateway

        async with http.get(gateway.admin_url("/healthz")) as response:
            assert response.status == 200
            assert await response.json() == {"status": "alive"}

        async with http.get(gateway.admin_url("/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            assert 'paywall_requests_total{mode="proxy",outcome="public"} 1.0' in (
                await response.text()
            )

        async with http.get(gateway.admin_url("/readyz")) as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["status"] == "ready"

        # The main listener does not serve the admin endpoints (they go to the upstream).
        async with http.get(gateway.url("/metrics")) as response:
            assert response.status == 404

    access = await gateway.process.wait_for("request", within=5)
    assert (access["logger"], access["path"], access["status"]) == ("gateway.access", "/fast", 200)


async def test_both_listeners_refuse_malformed_requests_quietly(
    start_gateway: StartGateway,
) -> None:
    # What aiohttp's parser refuses gets a 400 naming the error without echoing the request's
    # bytes, and one short log line without them (tests/security/test_log_hygiene.py has more).
    gateway = await start_gateway()
    secret = "cookie-secret-1234"
    raw = f'GET /fast HTTP/1.1\r\nCookie: paywall_session="{secret}"\r\nX-A: a\x01\r\n\r\n'
    for port in (gateway.port, gateway.admin_port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw.encode())
        await writer.drain()
        async with asyncio.timeout(10):
            answer = (await reader.read(-1)).decode("latin-1")
        writer.close()
        assert answer.startswith("HTTP/1.0 400 "), answer
        assert answer.endswith(
            "\r\n\r\nBad request: malformed HTTP request "
            "(BadHttpMessage: Invalid header value char)\n"
        ), answer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        refused = [r for r in gateway.process.records() if r.get("logger") == "gateway.protocol"]
        if len(refused) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(r["level"], r["msg"]) for r in refused] == [
        ("info", "bad request from client: BadHttpMessage: Invalid header value char")
    ] * 2
    assert secret not in gateway.process.stderr
    assert "Traceback" not in gateway.process.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_idle_gateway_stops_on_signal(start_gateway: StartGateway, signum: int) -> None:
    gateway = await start_gateway()
    gateway.process.proc.send_signal(signum)
    assert await gateway.process.wait(within=10) == 0, gateway.process.stderr
    assert "Traceback" not in gateway.process.stderr
    assert [r["msg"] for r in gateway.process.records()][-2:] == ["draining", "stopped"]


def drain_seconds(process: GatewayProcess) -> float:
    """From the "draining" to the "stopped" log line, by the gateway's own timestamps."""
    stamps = {
        r["msg"]: datetime.fromisoformat(r["ts"])
        for r in process.records()
        if r.get("msg") in ("draining", "stopped")
    }
    return (stamps["stopped"] - stamps["draining"]).total_seconds()


async def test_sigterm_lets_the_in_flight_request_finish(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    # The request needs 3 s, more than half the grace: aiohttp drains in two phases of half
    # the grace each, and the request must be allowed the whole grace, not only the first half.
    # Seconds, not fractions: the gateway is a process of its own on a possibly loaded machine.
    grace = 4.0
    gateway = await start_gateway(grace=grace)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        slow = asyncio.create_task(http.get(gateway.url("/slow?seconds=3")))
        try:
            async with asyncio.timeout(10):
                await upstream.slow_started.wait()
            signalled = time.monotonic()
            gateway.process.proc.send_signal(signal.SIGTERM)
            # New connections are refused at once, while the slow request is still running.
            assert await refused_within(gateway.port, 1.5), "still accepting after SIGTERM"
            assert not slow.done()
            await gateway.process.wait_for("draining", within=5)
            assert await connection_refused(gateway.admin_port)

            async with asyncio.timeout(10):
                response = await slow
            assert response.status == 200
            assert await response.text() == "slow 3.0"
            response.release()
        finally:
            slow.cancel()

    assert await gateway.process.wait(within=grace + 5) == 0, gateway.process.stderr
    assert time.monotonic() - signalled < grace + 5
    drained = drain_seconds(gateway.process)
    assert drained < grace - 0.2, f"drained for {drained:.2f}s: it waited out the grace"
    assert upstream.slow_finished == [3.0]
    assert "Traceback" not in gateway.process.stderr
    # The request that finished while draining has its access line, before "stopped".
    records = gateway.process.records()
    assert [(r["path"], r["status"]) for r in records if r["msg"] == "request"] == [("/slow", 200)]
    assert records[-1]["msg"] == "stopped"


async def test_every_access_line_is_written_before_it_stops(start_gateway: StartGateway) -> None:
    # The access log is written in batches by a thread of its own: none may be lost when the
    # gateway is stopped right after the last answer.
    gateway = await start_gateway()
    count = 300
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(n: int) -> int:
            # A transfer token gets a 303 that drops it (not followed); the rest a 404.
            query = f"?transferToken=tok-{n}" if n % 2 else ""
            url = gateway.url(f"/n/{n}{query}")
            async with http.get(url, allow_redirects=False) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(n) for n in range(count)))
    assert set(statuses) == {303, 404}
    gateway.process.proc.send_signal(signal.SIGTERM)
    assert await gateway.process.wait(within=10) == 0, gateway.process.stderr
    records = gateway.process.records()
    access = [r for r in records if r.get("logger") == "gateway.access"]
    assert sorted(r["path"] for r in access) == sorted(f"/n/{n}" for n in range(count))
    assert sorted(r["status"] for r in access) == sorted(statuses)
    assert {r["msg"] for r in access} == {"request"}  # none dropped
    assert records[-1]["msg"] == "stopped"
    assert "tok-" not in gateway.process.stderr


async def test_request_still_running_after_the_grace_is_cut(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    # A whole second per drain phase: the cut must come at the grace (not at twice it, nor
    # after the 8 s request), with headroom for a loaded machine on either side.
    grace = 2.0
    gateway = await start_gateway(grace=grace)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def slow_request() -> int:
            async with http.get(gateway.url("/slow?seconds=8")) as response:
                await response.read()
                return response.status

        slow = asyncio.create_task(slow_request())
        try:
            async with asyncio.timeout(10):
                await upstream.slow_started.wait()
            signalled = time.monotonic()
            gateway.process.proc.send_signal(signal.SIGTERM)
            assert await gateway.process.wait(within=grace + 4) == 0, gateway.process.stderr
            stopped_after = time.monotonic() - signalled
            with pytest.raises(aiohttp.ClientError):
                async with asyncio.timeout(5):
                    await slow
        finally:
            slow.cancel()
    assert stopped_after < grace + 3, f"stopped {stopped_after:.2f}s after SIGTERM (grace {grace}s)"
    drained = drain_seconds(gateway.process)
    assert grace - 0.05 <= drained <= grace + 1.0, f"drained for {drained:.2f}s, grace {grace}s"
    assert upstream.slow_finished == []
    assert "Traceback" not in gateway.process.stderr


# --- start-up failures ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["main", "admin"])
def test_port_in_use_exits_2_with_a_message(tmp_path: Path, which: str) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", grace=1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port, admin_port = (busy, free_port()) if which == "main" else (free_port(), busy)
        result = subprocess.run(
            [
                str(GATEWAY_BIN),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--admin-port",
                str(admin_port),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"paywall-gateway: cannot listen on 127.0.0.1:{busy} ({which})" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'eighty'\n", encoding="utf-8")
    assert main(["serve", "--config", str(config)]) == 2
    assert "server.port" in capsys.readouterr().err


# --- command-line overrides -------------------------------------------------------------------


def test_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", grace=1.5)
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--host", "::1", "--port", "9000", "--admin-port", "0"]
    )
    server = serve_settings(args).server
    assert (server.host, server.port, server.admin_port) == ("::1", 9000, 0)
    assert server.shutdown_grace == 1.5
    assert str(server.upstream) == "http://127.0.0.1:9/"


def test_without_overrides_the_file_wins(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", grace=1.5)
    server = serve_settings(build_parser().parse_args(["serve", "--config", str(config)])).server
    assert (server.host, server.port, server.admin_port) == ("127.0.0.1", 8080, 0)


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--port", port])
    assert exited.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_start_up_objects_are_kept_out_of_full_collections() -> None:
    from gateway import server

    assert gc.get_freeze_count() == 0
    built = {"start-up": ["state"]}
    assert any(o is built for o in gc.get_objects())  # walked by every full collection
    try:
        server._freeze_startup_objects()
        # Everything that existed is in the permanent generation, ``built`` among it: a full
        # collection no longer walks it.
        assert gc.get_freeze_count() > 0
        assert not any(o is built for o in gc.get_objects())
    finally:
        gc.unfreeze()
