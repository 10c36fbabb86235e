"""``python -m gateway.demo`` (``make demo``): the platform simulator, the demo site and the
gateway as three processes on loopback, plus the URLs to try them with.

Start-up is in order — simulator, site, gateway — each waited for until it answers (bounded by
``--startup-timeout``); a process that dies or does not answer ends the demo with the tail of
its log and exit code 1. Then a fresh transfer token for ``demo-session-plain`` is fetched
from the simulator and the URLs are printed. Ctrl-C or SIGTERM stops every process (SIGTERM,
then SIGKILL after a timeout); so does a process that exits on its own (exit code 1).

The gateway runs ``config/demo.toml``; ``PAYWALL_*`` variables in the environment still apply,
except the three this launcher sets for the chosen ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from gateway.cli import port_number
from gateway.demo.site import FEATURED_PREMIUM, with_transfer_token
from gateway.resources import sandbox_seed

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "config"
DEMO_CONFIG = CONFIG_DIR / "demo.toml"
SEED_DATA = sandbox_seed()
HOST = "127.0.0.1"
API_PREFIX = "/api/v3.0"
DEMO_SESSION = "demo-session-plain"
DEMO_CUSTOMER = "100001"
# Long enough that the printed URL still works when someone gets round to clicking it.
TRANSFER_TOKEN_TTL = 600
STOP_TIMEOUT = 5.0
PROBE_TIMEOUT = 1.0
PROBE_INTERVAL = 0.1
LOG_TAIL_LINES = 20
EXIT_FAILED = 1
EXIT_USAGE = 2


class DemoError(Exception):
    """The demo cannot run; the message says why (and shows the log tail of a failed process)."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived during start-up."""


@dataclass
class Child:
    """One process of the demo, its log file, and the URLs that answer 200 once it is ready."""

    name: str
    argv: list[str]
    ready_urls: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=environment,
                cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "  (no log)"
        return "\n".join(f"  | {line}" for line in lines[-LOG_TAIL_LINES:]) or "  (log is empty)"

    def died(self, when: str) -> DemoError:
        return DemoError(
            f"{self.name} exited with code {self.exit_code} {when}; "
            f"the end of {self.log}:\n{self.tail()}"
        )


@dataclass(frozen=True, slots=True)
class Ports:
    gateway: int
    admin: int
    site: int
    platform: int

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.gateway}"

    @property
    def platform_url(self) -> str:
        return f"http://{HOST}:{self.platform}{API_PREFIX}"


def plan(ports: Ports, config: Path, log_dir: Path) -> list[Child]:
    """The three processes, in start-up order."""
    python = sys.executable
    site_url = f"http://{HOST}:{ports.site}"
    return [
        Child(
            "sandbox",
            [
                *(python, "-m", "gateway", "sandbox", "--host", HOST),
                *("--port", str(ports.platform), "--data", str(SEED_DATA)),
                *("--transfer-token-ttl", str(TRANSFER_TOKEN_TTL)),
            ],
            [f"{ports.platform_url}/sessions/validate?sessionToken={DEMO_SESSION}"],
            log_dir / "sandbox.log",
        ),
        Child(
            "site",
            [
                *(python, "-m", "gateway.demo.site", "--port", str(ports.site)),
                *("--platform", ports.platform_url, "--data", str(SEED_DATA)),
                *("--gateway-url", ports.gateway_url),
                *("--gateway-url", f"http://localhost:{ports.gateway}"),
            ],
            [f"{site_url}/"],
            log_dir / "site.log",
        ),
        Child(
            "gateway",
            [
                *(python, "-m", "gateway", "serve", "--config", str(config)),
                *("--port", str(ports.gateway), "--admin-port", str(ports.admin)),
            ],
            [f"http://{HOST}:{ports.admin}/healthz", f"{ports.gateway_url}/"],
            log_dir / "gateway.log",
            env={
                "PAYWALL_PLATFORM__BASE_URL": ports.platform_url,
                "PAYWALL_SERVER__UPSTREAM": f"{site_url}/",
                "PAYWALL_SERVER__LOGIN_URL": f"{ports.gateway_url}/login",
            },
        ),
    ]


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, allow_redirects=False) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_ready(
    child: Child,
    children: Sequence[Child],
    http: aiohttp.ClientSession,
    stop: asyncio.Event,
    deadline: float,
) -> None:
    """Until every ready URL of ``child`` answers 200; DemoError when a process dies first or
    the deadline passes, Stopped on Ctrl-C / SIGTERM."""
    loop = asyncio.get_running_loop()
    pending = list(child.ready_urls)
    while True:
        if stop.is_set():
            raise Stopped
        for started in children:
            if started.process is not None and started.exit_code is not None:
                raise started.died("during start-up")
        while pending and await _answers(http, pending[0]):
            pending.pop(0)
        if not pending:
            return
        if loop.time() > deadline:
            raise DemoError(
                f"{child.name} did not answer {pending[0]} in time (--startup-timeout); "
                f"the end of {child.log}:\n{child.tail()}"
            )
        await asyncio.sleep(PROBE_INTERVAL)


async def create_transfer_token(http: aiohttp.ClientSession, platform_url: str) -> str:
    """A fresh one-time transfer token for DEMO_SESSION from the simulator."""
    url = f"{platform_url}/sessions/transferToken"
    try:
        async with http.post(url, json={"customerSession": DEMO_SESSION}) as response:
            payload = await response.json() if response.status == 200 else None
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DemoError(f"could not get a transfer token from {url}: {exc!r}") from None
    token = payload.get("transferToken") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise DemoError(f"could not get a transfer token from {url}: status {status}")
    return token


def banner(ports: Ports, children: Sequence[Child], token: str) -> str:
    """What the demo prints once everything answers."""
    premium = ports.gateway_url + FEATURED_PREMIUM.path
    minutes = TRANSFER_TOKEN_TTL // 60
    processes = "\n".join(f"  {c.name:<8} pid {c.pid:<8} {c.log}" for c in children)
    return f"""
Paywall demo is running. Open in a browser:

  paywall   {premium}
            a premium article: without a session the gateway shows the paywall, whose
            "Log in or subscribe" link leads to the demo's login page
  unlocked  {with_transfer_token(premium, token)}
            the same article with a fresh transfer token for customer {DEMO_CUSTOMER}
            ({DEMO_SESSION}): the gateway swaps it for a session cookie (one use, {minutes} min)
  login     {ports.gateway_url}/login
            the demo's stand-in for plenigo's login page: pick another demo customer, e.g.
            demo-session-no-rights (no rights: paywall) or demo-session-paused (paused)
  home      {ports.gateway_url}/

Platform simulator {ports.platform_url}, demo site http://{HOST}:{ports.site} (behind the
gateway), gateway admin http://{HOST}:{ports.admin}/metrics. Processes and logs:
{processes}

Ctrl-C stops everything.
"""


async def _first_exit(children: Sequence[Child], stop: asyncio.Event) -> Child | None:
    """Wait for Ctrl-C / SIGTERM (None) or for a process to exit on its own (that process)."""
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children if c.process is not None}
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([stopped, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stopped, *waits]:
            task.cancel()
    if stop.is_set():
        return None
    # Ctrl-C in a terminal reaches the children too; give our own handler a moment to say so.
    try:
        await asyncio.wait_for(stop.wait(), 0.5)
    except TimeoutError:
        return next(c for c in children if c.exit_code is not None)
    return None


async def terminate(children: Sequence[Child]) -> None:
    """SIGTERM every running child, SIGKILL those still running after STOP_TIMEOUT."""
    running = [c.process for c in children if c.process is not None and c.exit_code is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    if not running:
        return
    _done, pending = await asyncio.wait(
        [asyncio.ensure_future(p.wait()) for p in running], timeout=STOP_TIMEOUT
    )
    for task in pending:
        task.cancel()
    for process in running:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def run(args: argparse.Namespace) -> int:
    """Start, print, wait, stop. The exit code: 0 stopped on request, 1 a process failed."""
    ports = Ports(args.gateway_port, args.admin_port, args.site_port, args.platform_port)
    children = plan(ports, args.config.resolve(), args.log_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            deadline = loop.time() + args.startup_timeout
            for index, child in enumerate(children):
                await child.start()
                started = children[: index + 1]
                await wait_ready(child, started, http, stop, deadline)
            token = await create_transfer_token(http, ports.platform_url)
        print(banner(ports, children, token), flush=True)
        failed = await _first_exit(children, stop)
        if failed is not None:
            raise failed.died("unexpectedly")
        print("demo: stopping", flush=True)
        return 0
    except Stopped:
        print("demo: stopped during start-up", flush=True)
        return 0
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        await terminate(children)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo",
        description="Run the platform simulator, the demo site and the gateway on 127.0.0.1.",
    )
    parser.add_argument("--gateway-port", type=port_number, default=8080, help="(%(default)s)")
    parser.add_argument("--admin-port", type=port_number, default=8081, help="(%(default)s)")
    parser.add_argument("--site-port", type=port_number, default=8000, help="(%(default)s)")
    parser.add_argument("--platform-port", type=port_number, default=8090, help="(%(default)s)")
    parser.add_argument(
        "--config", type=Path, default=DEMO_CONFIG, help="gateway configuration (%(default)s)"
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="where the logs go (default: a new temp dir)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=20.0,
        help="seconds all three get to answer (%(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ports = [args.gateway_port, args.admin_port, args.site_port, args.platform_port]
    if len(set(ports)) != len(ports):
        print("demo: the four ports must differ", file=sys.stderr)
        return EXIT_USAGE
    for path in (args.config, SEED_DATA):
        if not path.is_file():
            print(
                f"demo: {path} is missing; the demo runs from a checkout of the repository "
                f"(it expects config/ beside gateway/, here {CONFIG_DIR})",
                file=sys.stderr,
            )
            return EXIT_USAGE
    args.log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="paywall-demo-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
