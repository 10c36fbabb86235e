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
import sys
import tempfile
from pathlib import Path

from common import BIN, free_port, gateway_config, require_wrk, start, stop, wait_http, wrk

COOKIE = "Cookie: paywall_session=demo-session-plain"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not require_wrk():
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
                "gateway/resources/sandbox-data.json",
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
