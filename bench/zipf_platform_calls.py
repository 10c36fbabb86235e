"""Platform calls per 10,000 Zipf-distributed requests to two gateway processes, with/without L2.

    .venv/bin/python bench/zipf_platform_calls.py [--requests 10000] [--customers 2000]
        [--exponent 1.1] [--seed 20240611] [--concurrency 32] [--latency 0.02]

Starts, on loopback: the platform simulator (`python -m gateway sandbox`, --latency seconds per
answer) with a generated seed file of --customers customers (each one session token and an
unlimited `premium` subscription), and a private redis-server (free port, no persistence).
Then, once per configuration:

* "L1 only": two `python -m gateway serve` processes in auth_request mode without Redis;
* "L1+L2": the same two processes with `[cache] redis_url` set (Redis flushed first),

fresh processes each time, and drives --requests `GET /_paywall/auth` requests
(`X-Original-URI: /premium/article`, the customer's token in `X-plenigo-customer-session`),
at most --concurrency in flight, request i going to process i % 2.

The workload: the customer of each request is drawn independently from a Zipf distribution
over the customers: rank k (1 = customer 200001, the hottest) has probability
k^-s / sum_j j^-s, s = --exponent, drawn with Python's `random.Random(--seed).choices`. Both
configurations replay the same sequence (same customers, same process for each request).

Every answer must be 200 with `X-Paywall-Access: granted` and the customer's id; anything else
is counted and makes the exit status 1. Platform calls are read from both processes' admin
/metrics (`paywall_platform_requests_total`, summed over processes and statuses, per endpoint);
if the simulator has a call counter (`GET /_sandbox/calls`), its count is shown as a
cross-check (the script does not need it).
The "ideal" lines are the lower bounds: one session validation and one hasAccess call per
distinct customer per process (L1 only) or per distinct customer overall (shared L2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import (
    Gateway,
    Samples,
    breaker_openings,
    drive_auth,
    free_port,
    load_note,
    redis_command,
    simulator_calls,
    start_redis,
    start_sandbox,
    stop,
    write_config,
    write_customers,
    zipf_sequence,
)

PROCESSES = 2


@dataclass
class Run:
    label: str
    requests: int
    failures: Counter[str]
    seconds: float
    metrics: Samples
    simulator_calls: int | None  # from the simulator's own counter, when it has one
    breaker_openings: int  # Redis breaker openings logged by the processes


def run(
    label: str,
    tmp: Path,
    platform: int,
    cache: dict[str, object],
    sequence: list[int],
    customers: list[tuple[str, str]],
    concurrency: int,
) -> Run:
    config = tmp / f"{label.replace(' ', '_').replace('+', '-')}.toml"
    write_config(config, mode="auth_request", platform=platform, sections={"cache": cache})
    gateways: list[Gateway] = []
    try:
        for n in range(PROCESSES):
            gateways.append(Gateway(config, log=tmp / f"{config.stem}-{n}.log"))
        before = Samples.total(g.metrics() for g in gateways)
        simulator_before = simulator_calls(platform)
        started = time.monotonic()
        failures = asyncio.run(drive_auth(gateways, sequence, customers, concurrency))
        seconds = time.monotonic() - started
        after = Samples.total(g.metrics() for g in gateways)
        simulator_after = simulator_calls(platform)
    finally:
        for gateway in gateways:
            gateway.stop()
    simulator = None
    if simulator_before is not None and simulator_after is not None:
        simulator = simulator_after - simulator_before
    logs = [tmp / f"{config.stem}-{n}.log" for n in range(PROCESSES)]
    openings = sum(breaker_openings(log) for log in logs)
    return Run(label, len(sequence), failures, seconds, after - before, simulator, openings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--exponent", type=float, default=1.1, help="Zipf exponent s")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.02, help="simulator latency, seconds")
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=None,
        help="[cache] redis_timeout for the L1+L2 run (default: the gateway's default)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the data file, configs and process logs here (default: a temporary dir)",
    )
    args = parser.parse_args()

    sequence = zipf_sequence(args.customers, args.requests, args.exponent, args.seed)
    per_process = [set(sequence[p::PROCESSES]) for p in range(PROCESSES)]
    ideal_l1 = 2 * sum(len(seen) for seen in per_process)
    ideal_l2 = 2 * len(set(sequence))
    hottest = Counter(sequence).most_common(1)[0][1]
    print(
        f"workload: {args.requests} requests, Zipf s={args.exponent} over {args.customers} "
        f"customers, seed {args.seed}: {len(set(sequence))} distinct customers "
        f"({' + '.join(str(len(seen)) for seen in per_process)} per process), hottest one "
        f"{hottest} requests; concurrency {args.concurrency}, simulator latency "
        f"{args.latency * 1000:.0f} ms, {PROCESSES} gateway processes (round robin)"
    )
    print(f"start: {load_note()}")
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-zipf-")))
        else:
            tmp = args.workdir
            tmp.mkdir(parents=True, exist_ok=True)
        customers = write_customers(tmp / "customers.json", args.customers)
        platform, redis_port = free_port(), free_port()
        sandbox = start_sandbox(platform, tmp / "customers.json", args.latency, tmp / "sb.log")
        redis = None
        try:
            redis = start_redis(redis_port, tmp)
            l2: dict[str, object] = {"redis_url": f"redis://127.0.0.1:{redis_port}/0"}
            if args.redis_timeout is not None:
                l2["redis_timeout"] = args.redis_timeout
            for label, cache in (("L1 only", {}), ("L1+L2", l2)):
                if redis_command(redis_port, "FLUSHALL") != "+OK":
                    raise RuntimeError("FLUSHALL failed")
                runs.append(run(label, tmp, platform, cache, sequence, customers, args.concurrency))
        finally:
            if redis is not None:
                stop(redis)
            stop(sandbox)

    print(f"end: {load_note()}")
    print()
    header = (
        f"{'configuration':14s}{'requests':>10s}{'failures':>10s}{'validate-session':>18s}"
        f"{'hasAccess':>11s}{'total':>8s}{'calls/10k req':>15s}"
    )
    print(header)
    print("-" * len(header))
    failed = False
    for result in runs:
        m = result.metrics
        validate, has_access = m.platform_calls("validate_session"), m.platform_calls("has_access")
        total = m.platform_calls()
        bad = sum(result.failures.values())
        failed = failed or bad > 0
        print(
            f"{result.label:14s}{result.requests:10d}{bad:10d}{validate:18d}{has_access:11d}"
            f"{total:8d}{total * 10_000 / result.requests:15.0f}"
        )
    for label, ideal in (("ideal L1 only", ideal_l1), ("ideal L1+L2", ideal_l2)):
        print(
            f"{label:14s}{args.requests:10d}{'':10s}{ideal // 2:18d}{ideal // 2:11d}"
            f"{ideal:8d}{ideal * 10_000 / args.requests:15.0f}"
        )
    print()
    for result in runs:
        m = result.metrics
        tiers = ", ".join(
            f"{cache} {tier} {outcome} {m.lookups(cache, tier, outcome)}"
            for cache, tier, outcome in itertools.product(
                ("session", "access"), ("l1", "l2"), ("hit", "miss")
            )
            if m.lookups(cache, tier, outcome)
        )
        statuses = ", ".join(
            f"{dict(labels)['endpoint']} {dict(labels)['status']}: {value:.0f}"
            for (sample, labels), value in sorted(m.values.items(), key=str)
            if sample == "paywall_platform_requests_total" and value
        )
        redis_errors = ", ".join(
            f"{dict(labels)['operation']} {value:.0f}"
            for (sample, labels), value in sorted(m.values.items(), key=str)
            if sample == "paywall_redis_errors_total" and value
        )
        print(
            f"{result.label}: {result.seconds:.1f} s; lookups: {tiers}; coalesced "
            f"{m.sum('paywall_coalesced_total'):.0f}; redis errors: {redis_errors or 'none'}; "
            f"redis breaker openings: {result.breaker_openings}; platform answers: {statuses}"
        )
        if result.simulator_calls is not None:
            agrees = "agrees" if result.simulator_calls == m.platform_calls() else "DISAGREES"
            print(
                f"  simulator's own counter (/_sandbox/calls): {result.simulator_calls} calls, "
                f"{agrees} with the gateways' metrics"
            )
        if result.failures:
            print(f"  unexpected answers: {dict(result.failures)}")
    if len(runs) == 2:
        saved = runs[0].metrics.platform_calls() - runs[1].metrics.platform_calls()
        possible = ideal_l1 - ideal_l2
        print(
            f"L2 saved {saved} platform calls of the {possible} a shared tier could save "
            f"({100 * saved / possible:.0f} %)"
        )
    if failed:
        print("FAILED: not every request was answered 200 granted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
