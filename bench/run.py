"""paywall-gateway's benchmark: every scenario of issue 12 next to its reference, in one run.

    .venv/bin/python bench/run.py [--quick] [--duration S] [--rounds N] [--connections C]
        [--scenarios auth,proxy,...] [--results DIR] [--workdir DIR] [--max-minutes M]

(`make bench` installs wrk, nginx and Redis and the ``bench`` extra first, then runs this.)

Starts everything on 127.0.0.1 — the platform simulator (with injected latency where a
scenario needs it), a content server, Redis, nginx with both shipped configurations, the
gateway — runs each scenario interleaved with its reference (A B, A B, ...: ``--rounds``
rounds, the median ratio and its spread), checks that every run's answers and cache accounting
are what the scenario claims, and writes ``results.md`` (the table), ``results.json`` (every
round's numbers) and ``chart.png`` into ``bench/results/<UTC timestamp>/``. Prints the table.

Scenarios (``--scenarios``, comma-separated; default all, in this order): auth, proxy, l2,
nginx, nginx-cached (bench/throughput.py), latency, spike, zipf, hot, memory
(bench/workloads.py). With the defaults the run takes 10-15 minutes on two cores; ``--quick``
is a smoke run of a minute or two (1 s runs, smaller workloads: its figures are not the
benchmark's).

Every child process is stopped at the end, also on Ctrl-C, SIGTERM, an error, or when the run
exceeds ``--max-minutes``. Exit status: 0 when every scenario produced a figure (met or
missed), 1 when one was invalid or failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import report
import throughput
import workloads
from context import Bench, Options
from report import InvalidRun, Results, Row

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS: dict[str, tuple[str, Callable[[Bench], None]]] = {
    "auth": ("1-2. auth endpoint, L1 hit", throughput.auth_endpoint),
    "proxy": ("3. proxy mode, L1 hit", throughput.proxy_mode),
    "l2": ("4. L2-only hit", throughput.l2_only),
    "nginx": ("5. nginx auth_request", throughput.nginx_plain),
    "nginx-cached": ("6. nginx, cached auth answers (+ limits)", throughput.nginx_cached),
    "latency": ("7. added latency at half load", workloads.added_latency),
    "spike": ("8. cold spike", workloads.cold_spike),
    "zipf": ("9. Zipf workload", workloads.zipf),
    "hot": ("10. hot customers, slow platform", workloads.hot_customers),
    "memory": ("11. memory of cached customers", workloads.memory),
}


class Interrupted(BaseException):
    """SIGTERM, or --max-minutes passed: stop like Ctrl-C does."""


def options_from(args: argparse.Namespace) -> Options:
    quick = args.quick
    return Options(
        duration=args.duration or (1 if quick else 8),
        rounds=args.rounds,
        connections=args.connections,
        l2_customers=500 if quick else 2_000,
        spike=1_000,
        zipf_requests=20_000 if quick else 200_000,
        zipf_customers=2_000 if quick else 20_000,
        zipf_concurrency=128,
        hot_customers=20,
        hot_rate=1_000.0,
        memory_customers=10_000 if quick else 100_000,
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    parser.add_argument("--duration", type=int, default=0, help="seconds per run (8; quick: 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (>= 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results", help="parent of the results"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep configs and logs here (default: temp)"
    )
    parser.add_argument("--max-minutes", type=float, default=40.0, help="stop after this long")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    args.chosen = chosen
    return args


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse(argv)
    options = options_from(args)
    started = datetime.now(UTC)
    folder = args.results / started.strftime("%Y%m%dT%H%M%SZ")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="paywall-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = Results()
    bench = Bench(options, workdir, results)
    # make bench says how it was called; run directly, the command line.
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["bench/run.py", *argv])
    info = report.machine()
    info |= {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "load_start": report.load_average()}
    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGALRM, _raise_interrupted)
    signal.alarm(int(args.max_minutes * 60))
    status = 0
    clock = time.monotonic()
    title = ""
    try:
        for name in args.chosen:
            title, scenario = SCENARIOS[name]
            bench.log(f"{title} ...")
            try:
                scenario(bench)
            except InvalidRun as exc:
                status = 1
                results.add(Row(scenario=title, error=str(exc)))
                bench.log(str(exc))
            except Exception as exc:  # a server that did not start, wrk failing, ...
                status = 1
                traceback.print_exc()
                results.add(Row(scenario=title, error=f"error: {exc}"))
    except (KeyboardInterrupt, Interrupted) as exc:
        status = 130
        why = str(exc) or type(exc).__name__
        results.add(Row(scenario=title, error=f"error: interrupted ({why}); later ones not run"))
        bench.log(f"interrupted ({why}): stopping everything")
    finally:
        signal.alarm(0)
        bench.stop()
        info |= {
            "load_end": report.load_average(),
            "seconds": time.monotonic() - clock,
        }
        opts = vars(options) | {"command": command, "scenarios": args.chosen}
        report.write(folder, results, info, opts)
        chart = report.chart(folder, results.rows, f"paywall-gateway, {info['started']}")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"Machine: {report.machine_text(info)}")
    print(f"Took {info['seconds'] / 60:.1f} minutes. Command: {command}")
    print()
    print(report.table(results.rows))
    print()
    print(f"Written: {folder / 'results.md'}, {folder / 'results.json'}", end="")
    print(f", {chart}" if chart else " (no chart: matplotlib is missing; make bench installs it)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
