"""The ASGI middleware's test bench: the platform simulator in-process, gateway configurations,
and uvicorn serving the conformance apps (tests/conformance/apps_asgi.py) as a subprocess.

uvicorn gets a free loopback port, writes its output to a file under the test's temporary
directory, and is stopped with SIGTERM (SIGKILL after a few seconds). Waits are polls with a
deadline, never blocking calls on the test's event loop, which also serves the simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.sandbox.app import SandboxOptions
from gateway.sandbox.app import create_app as create_sandbox
from gateway.sandbox.data import load_data
from tests.conftest import REPO_ROOT

API_TOKEN = "asgi-sandbox-token"
LOGIN_URL = "https://login.example/sso"
ROUTES: list[dict[str, Any]] = [
    {"path": "/premium/**", "access_rights": ["premium"]},
    {"path": "/archive/**", "access_rights": ["archive"]},
    {"path": "/ws", "access_rights": ["premium"]},
    {"path": "/forms/**", "methods": ["POST"], "public": True},
    {"path": "/**", "public": True},
]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
POLL = 0.02


def seed_path() -> Path:
    """The simulator's seed data, wherever this checkout keeps it."""
    try:
        from gateway.resources import sandbox_seed
    except ImportError:
        return REPO_ROOT / "config" / "sandbox-data.json"
    return sandbox_seed()


def simulator() -> web.Application:
    """The platform simulator on the real clock (the gateway in uvicorn uses the real clock)."""
    now = datetime.now(UTC)
    return create_sandbox(load_data(seed_path(), now), SandboxOptions(api_token=API_TOKEN))


def gateway_config(platform_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """Gateway settings (as Settings / TOML data) for the simulator at ``platform_url``."""
    config: dict[str, Any] = {
        # No breaker: the platform-down rows must not leave the platform shut off for others.
        "platform": {
            "base_url": platform_url,
            "api_token": API_TOKEN,
            "max_retries": 0,
            "breaker_failures": 0,
        },
        "server": {"cookie_secure": False, "login_url": LOGIN_URL},
        "routes": ROUTES,
    }
    for name, values in sections.items():
        if name == "routes":
            config["routes"] = values
        else:
            config.setdefault(name, {}).update(values)
    return config


def write_toml(path: Path, config: dict[str, Any]) -> Path:
    """``config`` as a TOML file (JSON strings, numbers, booleans and arrays are TOML too)."""
    lines: list[str] = []
    for section, values in config.items():
        if section == "routes":
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    for route in config.get("routes", ()):
        lines.append("[[routes]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in route.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Uvicorn:
    """``uvicorn tests.conformance.apps_asgi:<factory> --factory`` on ``port``."""

    def __init__(self, factory: str, port: int, *, config: Path, workdir: Path) -> None:
        self.port = port
        self.app_log = workdir / f"{factory}-app.jsonl"
        self.app_log.touch()
        self.output_path = workdir / f"{factory}-uvicorn.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWALL_")}
        env["PAYWALL_TEST_CONFIG"] = str(config)
        env["PAYWALL_TEST_APP_LOG"] = str(self.app_log)
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            f"tests.conformance.apps_asgi:{factory}",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            "--http",
            "h11",
            "--ws",
            "websockets-sansio",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "3",
        ]
        with self.output_path.open("ab") as output:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def app_requests(self) -> list[dict[str, Any]]:
        """What the app received so far, one object per request."""
        text = self.app_log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]

    def app_log_text(self) -> str:
        return self.app_log.read_text(encoding="utf-8")

    async def wait_ready(self) -> None:
        """Until the port accepts connections: uvicorn listens once lifespan startup is done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                pass
            else:
                writer.close()
                return
            if self.popen.poll() is not None or loop.time() > deadline:
                await self.stop()
                pytest.fail(
                    f"uvicorn did not start on {self.port}:\n{self.output()}", pytrace=False
                )
            await asyncio.sleep(POLL)

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is None:
                self.popen.send_signal(signum)
            deadline = loop.time() + STOP_TIMEOUT
            while True:
                if self.popen.poll() is not None or loop.time() >= deadline:
                    break
                await asyncio.sleep(POLL)
            if self.popen.poll() is not None:
                break
        code = self.popen.poll()
        assert code is not None, f"uvicorn (pid {self.popen.pid}) survived SIGKILL"
        return code


async def stop_all(servers: Iterable[Uvicorn]) -> None:
    await asyncio.gather(*(server.stop() for server in servers))
