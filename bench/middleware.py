"""Requests per second of a cached decision through the ASGI and the WSGI middleware, each next
to the same app without it, in one run.

    .venv/bin/python bench/middleware.py [--duration 8] [--connections 32]

Starts, on loopback: the platform simulator; a trivial Starlette app under uvicorn (1 worker),
bare and behind gateway.asgi.PaywallMiddleware; a trivial Flask app under gunicorn (gthread,
2 workers x 4 threads), bare and behind gateway.wsgi.PaywallMiddleware
(bench/middleware_apps.py). wrk drives each for --duration seconds with a subscriber's session
on a premium page, after a warm-up request per worker so the decision is cached (an L1 hit;
the WSGI middleware answers it without its event loop). Prints one line per target and the
ratios. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import BIN, free_port, load_note, require_wrk, start, stop, wait_http, write_config, wrk

COOKIE = "Cookie: paywall_session=demo-session-plain"
URI = "/premium/article"


def uvicorn(app: str, port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        "--app-dir",
        "bench",
        f"middleware_apps:{app}",
        "--factory",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def gunicorn(app: str, port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "--chdir",
        "bench",
        "-k",
        "gthread",
        "-w",
        "2",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        f"middleware_apps:{app}()",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not require_wrk():
        return 2
    platform = free_port()
    sandbox = start([str(BIN / "paywall-gateway"), "sandbox", "--port", str(platform)])
    results: dict[str, float] = {}
    try:
        wait_http(f"http://127.0.0.1:{platform}/api/v3.0/")
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "gateway.toml"
            write_config(config, mode="proxy", platform=platform)
            env = {**os.environ, "BENCH_CONFIG": str(config)}
            targets = [
                ("starlette under uvicorn", uvicorn("starlette_bare", port := free_port()), port),
                ("same + ASGI middleware", uvicorn("starlette_gated", port := free_port()), port),
                ("flask under gunicorn", gunicorn("flask_bare", port := free_port()), port),
                ("same + WSGI middleware", gunicorn("flask_gated", port := free_port()), port),
            ]
            for name, command, port in targets:
                server = start(command, env=env)
                try:
                    url = f"http://127.0.0.1:{port}{URI}"
                    wait_http(url)
                    for _ in range(8):  # every worker sees the session once: cached after
                        wrk(url, [COOKIE], 1, 2)
                    rate, detail = wrk(url, [COOKIE], args.duration, args.connections)
                finally:
                    stop(server)
                results[name] = rate
                print(f"{name:<28} {rate:>9.0f} req/s  ({detail})")
    finally:
        stop(sandbox)
    asgi = results["same + ASGI middleware"] / results["starlette under uvicorn"]
    wsgi = results["same + WSGI middleware"] / results["flask under gunicorn"]
    print(f"ASGI middleware: {asgi:.2f} x the bare Starlette app")
    print(f"WSGI middleware: {wsgi:.2f} x the bare Flask app")
    print(load_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
