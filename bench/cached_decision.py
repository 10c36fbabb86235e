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
import sys
import tempfile
from pathlib import Path

from common import (
    ROOT,
    Gateway,
    free_port,
    gateway_config,
    require_wrk,
    start,
    start_sandbox,
    stop,
    wait_http,
    wrk,
)

COOKIE = "Cookie: paywall_session=demo-session-plain"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not require_wrk():
        return 2

    platform, bare = free_port(), free_port()
    children = [start_sandbox(platform, ROOT / "gateway/resources/sandbox-data.json")]
    results: dict[str, float] = {}
    try:
        children.append(start([sys.executable, "bench/bare_app.py", str(bare)]))
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
                config = Path(tmp) / f"{mode}-{access_log}.toml"
                gateway_config(config, mode, platform, bare, access_log)
                gateway = Gateway(config)
                try:
                    if mode == "auth_request":
                        url = gateway.auth_url
                        headers = [COOKIE, "X-Original-URI: /premium/article"]
                    else:
                        url = f"http://127.0.0.1:{gateway.port}/premium/article"
                        headers = [COOKIE]
                    # Prime the caches (session validation, hasAccess), then measure hits.
                    wrk(url, headers, 1, 1)
                    rate, detail = wrk(url, headers, args.duration, args.connections)
                finally:
                    gateway.stop()
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
