"""Paced (open-loop) load on the bare handler and on a cached decision, rounds alternating.

    .venv/bin/python bench/paced.py [--rate 6000] [--rounds 3] [--seconds 6]
        [--access-log on|off] [--pin]

Starts, on loopback, the platform simulator (one customer), the bare aiohttp handler
(bench/bare_app.py) and a gateway in auth_request mode (its access log on unless
``--access-log off``), then sends each of them ``--rate`` requests a second for ``--seconds``
seconds with bench/loadgen.py's open loop, bare handler and gateway in turn, ``--rounds``
times. The gateway's answers are L1 hits (one customer, warmed first).

Prints per run the p50 and p99 latency (from when each request was due), the generator's lag
and each server's CPU time per request (/proc, every thread: the gateway's includes its
access-log writer). ``make bench`` row 7 measures the same thing at half the bare handler's
wrk maximum; this script is for comparing one change at a rate of your choice, and shows how
much of a core each server needs at that rate (paced requests arrive one or two per loop
iteration, so each costs more than under wrk's saturating load).

``--pin`` runs the servers on CPU 0 and the generator on CPU 1 (``taskset``): on a two-core
machine, the server then never shares its core with the generator, and the gateway's
access-log writer shares the main thread's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import loadgen
from common import (
    Gateway,
    cpu_seconds,
    free_port,
    load_note,
    start,
    start_sandbox,
    stop,
    wait_http,
    write_config,
    write_customers,
)
from workloads import PREMIUM_URI, auth_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=6000.0, help="requests a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per run")
    parser.add_argument("--access-log", choices=("on", "off"), default="on")
    parser.add_argument("--pin", action="store_true", help="servers on CPU 0, generator on 1")
    args = parser.parse_args()
    server_cpu = ("taskset", "-c", "0") if args.pin else ()
    if args.pin:
        os.sched_setaffinity(0, {1})
    print(f"start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="bench-paced-") as directory:
        tmp = Path(directory)
        customer_id, token = write_customers(tmp / "customers.json", 1)[0]
        platform, bare_port = free_port(), free_port()
        sandbox = start_sandbox(platform, tmp / "customers.json", log=tmp / "sb.log")
        bare = start([*server_cpu, sys.executable, "bench/bare_app.py", str(bare_port)])
        gateway: Gateway | None = None
        try:
            wait_http(f"http://127.0.0.1:{bare_port}/")
            config = tmp / "gateway.toml"
            write_config(
                config,
                mode="auth_request",
                platform=platform,
                access_log=args.access_log == "on",
                sections={},
            )
            gateway = Gateway(config, log=tmp / "gateway.log", wrapper=server_cpu)
            bare_request = loadgen.get_request(f"127.0.0.1:{bare_port}", PREMIUM_URI)
            targets = (
                ("bare", bare_port, bare.pid, loadgen.Job(bare_request)),
                ("gateway", gateway.port, gateway.pid, auth_job(gateway.port, customer_id, token)),
            )
            for _, port, _, job in targets:  # warm: L1 filled, connections opened
                loadgen.open_loop("127.0.0.1", port, [job], args.rate, 1.0)
            for round_ in range(1, args.rounds + 1):
                for name, port, pid, job in targets:
                    before = cpu_seconds(pid)
                    result = loadgen.open_loop("127.0.0.1", port, [job], args.rate, args.seconds)
                    used = cpu_seconds(pid) - before
                    if result.failures:
                        raise SystemExit(f"{name}: unexpected answers {dict(result.failures)}")
                    print(
                        f"round {round_} {name:8s} {args.rate:8,.0f} req/s: "
                        f"p50 {result.percentile(50):6.2f} ms, p99 {result.percentile(99):7.2f} "
                        f"ms; CPU {1e6 * used / result.requests:5.1f} us/request "
                        f"({100 * used / result.seconds:3.0f} % of a core); "
                        f"generator lag {result.behind * 1000:.1f} ms",
                        flush=True,
                    )
        finally:
            if gateway is not None:
                gateway.stop()
            stop(bare)
            stop(sandbox)
    print(f"end: {load_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
