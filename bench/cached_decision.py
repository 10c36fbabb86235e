"""Requests per second of a cached decision, next to a bare aiohttp handler in the same run.

    .venv/bin/python bench/cached_decision.py [--duration 10] [--connections 32]

Starts, on loopback: the platform simulator, a bare aiohttp handler (the reference), and the
gateway (`paywall-gateway serve`) in auth_request mode, then in proxy mode in front of the bare
handler. wrk (Debian package `wrk`) drives each for --duration seconds with one thread; every
gateway request carries a session whose decision is cached after the first request. Prints one
line per target and the ratios. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COOKIE = "Cookie: paywall_session=demo-session-plain"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wrk(url: str, headers: list[str], duration: int, connections: int) -> tuple[float, str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    result = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration + 30
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    p50 = re.search(r"50%\s+(\S+)", result.stdout)
    p99 = re.search(r"99%\s+(\S+)", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if rate is None or errors is not None:
        raise RuntimeError(f"wrk against {url} failed:\n{result.stdout}{result.stderr}")
    detail = f"p50 {p50.group(1) if p50 else '?'}, p99 {p99.group(1) if p99 else '?'}"
    return float(rate.group(1)), detail


def gateway_config(path: Path, mode: str, platform: int, upstream: int, access_log: bool) -> None:
    path.write_text(
        f"""
[platform]
base_url = "http://127.0.0.1:{platform}/api/v3.0"
[server]
mode = "{mode}"
upstream = "http://127.0.0.1:{upstream}/"
cookie_secure = false
[logging]
access_log = {str(access_log).lower()}
[[routes]]
path = "/premium/**"
access_rights = ["premium"]
[[routes]]
path = "/**"
public = true
""",
        encoding="utf-8",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    platform, bare = free_port(), free_port()
    children = [
        start(
            [
                str(BIN / "paywall-gateway"),
                "sandbox",
                "--port",
                str(platform),
                "--data",
                "config/sandbox-data.json",
            ]
        ),
        start([sys.executable, "bench/bare_app.py", str(bare)]),
    ]
    results: dict[str, float] = {}
    try:
        wait_http(f"http://127.0.0.1:{platform}/api/v3.0/")
        wait_http(f"http://127.0.0.1:{bare}/")
        rate, detail = wrk(f"http://127.0.0.1:{bare}/", [], args.duration, args.connections)
        results["bare"] = rate
        print(f"bare aiohttp handler                  {rate:10.0f} req/s  ({detail})")
        with tempfile.TemporaryDirectory() as tmp:
            for mode, access_log in (
                ("auth_request", False),
                ("auth_request", True),
                ("proxy", False),
            ):
                port, admin = free_port(), free_port()
                config = Path(tmp) / f"{mode}-{access_log}.toml"
                gateway_config(config, mode, platform, bare, access_log)
                gateway = start(
                    [
                        str(BIN / "paywall-gateway"),
                        "serve",
                        "--config",
                        str(config),
                        "--port",
                        str(port),
                        "--admin-port",
                        str(admin),
                    ],
                    env={**os.environ},
                )
                try:
                    wait_http(f"http://127.0.0.1:{admin}/healthz")
                    if mode == "auth_request":
                        url = f"http://127.0.0.1:{port}/_paywall/auth"
                        headers = [COOKIE, "X-Original-URI: /premium/article"]
                    else:
                        url = f"http://127.0.0.1:{port}/premium/article"
                        headers = [COOKIE]
                    # Prime the caches (session validation, hasAccess), then measure hits.
                    wrk(url, headers, 1, 1)
                    rate, detail = wrk(url, headers, args.duration, args.connections)
                finally:
                    stop(gateway)
                label = f"gateway {mode}, cached grant" + (", access log" if access_log else "")
                results[label] = rate
                print(f"{label:38s}{rate:10.0f} req/s  ({detail})")
    finally:
        for child in children:
            stop(child)
    for label, rate in results.items():
        if label != "bare":
            print(f"{label}: {rate / results['bare']:.2f} x the bare handler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
