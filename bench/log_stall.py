"""How late the event loop runs while it logs access lines, and what they cost it, in-process.

    .venv/bin/python bench/log_stall.py [--seconds 8] [--lines-per-ms 10] [--off]

An event loop (uvloop when installed) sleeps 1 ms at a time, and after each sleep logs
``--lines-per-ms`` access-log lines (to /dev/null), as a gateway answering that many requests
a millisecond would. Prints the percentiles of how much later than 1 ms each sleep ended (the
time a request arriving then would wait for the loop, the writer thread holding the GIL
included), and the loop thread's CPU time per line: the log calls and the chunks the loop
formats between them. ``--off`` logs nothing (the reference).

No sockets and no other process, so it is far steadier than a load test on a shared machine:
run it against two builds (PYTHONPATH) to compare a change of the access log.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from gateway.access_log import AccessLog
from gateway.redaction import Redactor


async def measure(log: AccessLog | None, seconds: float, lines: int) -> tuple[list[float], float]:
    """The sorted lateness of each sleep, and the loop thread's CPU time in seconds."""
    lateness: list[float] = []
    cpu = time.thread_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - started - 0.001)
        if log is not None:
            for _ in range(lines):
                log.log("GET", "/_paywall/auth", 200, "granted", "hit", "l1", "100001", "::1", 1e-4)
    return sorted(lateness), time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--lines-per-ms", type=int, default=10)
    parser.add_argument("--off", action="store_true", help="log nothing (the reference)")
    args = parser.parse_args()
    with open("/dev/null", "w") as stream:
        log = None if args.off else AccessLog(Redactor(), stream)
        try:
            import uvloop
        except ImportError:
            runner = asyncio.Runner()
        else:
            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        with runner:
            lateness, cpu = runner.run(measure(log, args.seconds, args.lines_per_ms))
        if log is not None:
            log.close()
    n = len(lateness)
    shown = ", ".join(
        f"p{p} {lateness[min(n - 1, int(n * p / 100))] * 1000:.3f} ms" for p in (50, 99, 99.9)
    )
    worst = lateness[-1] * 1000
    # With --off: the loop's own CPU, per line it would have logged.
    per_line = cpu / (n * args.lines_per_ms) * 1e6
    print(
        f"{'off' if args.off else 'on'}: {n} sleeps; lateness {shown}, max {worst:.3f} ms; "
        f"loop CPU {per_line:.2f} µs per line"
    )


if __name__ == "__main__":
    main()
