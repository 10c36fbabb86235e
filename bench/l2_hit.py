"""Requests per second of an L2-only hit next to an L1 hit and a bare aiohttp handler, one run.

    .venv/bin/python bench/l2_hit.py [--duration 8] [--connections 32] [--customers 2000]
        [--max-entries 100] [--redis-timeout S] [--workdir DIR] [--profile FILE]
        [--profiler py-spy|perf|callgrind] [--profile-run l2|l1] [--access-log]

Starts, on loopback: the platform simulator with a generated seed file of --customers customers
(each one session token and an unlimited `premium` subscription), a private redis-server (free
port, no persistence) and the bare aiohttp handler (bench/bare_app.py, the reference).

1. Warming: a gateway process with `[cache] redis_url` and the default L1 size asks
   `/_paywall/auth` once for every customer, so Redis holds every session validation and every
   access answer (fresh for 300 s: `[access] default_ttl = 300`); then it stops.
2. The measured gateway: auth_request mode, the same Redis, `[cache] max_entries =
   --max-entries` (100 is the smallest the config allows). wrk (-t1, --connections, --duration
   seconds) drives, in this order:
   * bare handler, static headers; bare handler through the rotating Lua script (wrk's own cost
     of the script);
   * L1 hit, one customer (static headers, as bench/cached_decision.py);
   * L1 hit, rotating over 50 customers (fewer than L1 holds; Lua script);
   * L2-only hit, rotating over all --customers customers in order: with more customers than
     L1 holds, each one was evicted from L1 long before it comes round again, so every lookup
     misses L1 and is answered by Redis.
   Each gateway run is preceded by 1 s of the same wrk load (fills L1 from L2 for the L1 runs,
   opens the Redis connections for the L2 run). Every answer must be 2xx (wrk's "Non-2xx" makes
   the run fail). Around each measured run the script reads the gateway's admin /metrics (how
   many lookups L1 and L2 answered, platform calls, Redis errors), /readyz, Redis's INFO (Redis
   commands per request, new connections), the gateway's CPU time (/proc), and counts the Redis
   breaker's "not asking it" log lines. INFO counts the reads the lookup script makes inside
   Redis too (five per L2-only lookup), so its commands per request are no round trips: `make
   bench` row 4 counts the commands clients send, with MONITOR.

--profile records the measured gateway during the L2-only run (``--profile-run l1``: the L1 hit
of one customer instead): with py-spy (``pip install
py-spy`` into the venv; native frames, py-spy's raw format, one stack per line), or with
``--profiler perf`` (Debian's linux-perf, as root: 499 Hz with DWARF call graphs, tens of MB
for a run; ``perf report -i FILE --children`` attributes the compiled build's functions,
``CPyDef_<module>___<name>``, with what they call). py-spy pauses the process to sample it,
which slows Redis's answers as the gateway sees them: give a generous --redis-timeout, or the
Redis breaker opens and the platform answers.

``--profiler callgrind`` runs the measured gateway under valgrind's callgrind (Debian's
valgrind), which counts the instructions each function runs, callees included, during the
profiled run only (``callgrind_control -i on``/``off`` around it); the file is written when the
gateway stops. Unlike a sampling profile it is exact and the same from run to run, whatever
else the machine does, so a change of a few percent shows: compare a function's instructions
per call (``callgrind_annotate --inclusive=yes --tree=calling FILE`` gives the calls), and
divide by the run's requests (printed) for a whole request's. The gateway runs some 50 times
slower under valgrind, so every throughput printed is meaningless, and fewer lookups share a
Redis batch than at full speed: a batch's own cost weighs more per request. Use it with
``--connections 8 --duration 15 --redis-timeout 5``.

``--access-log`` turns the measured gateway's access log on (``[logging] access_log``, off by
default here, as in `make bench` row 4; on in row 1); its lines go to the gateway's log file.

Prints req/s, latency, the ratio to the bare handler, and the cache accounting of each run,
with the load average (the numbers are only as good as the machine is quiet). Exit status 1 if
the L2 run asked the platform or fewer than 99 % of its lookups were L2 hits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import (
    PREMIUM_URI,
    SESSION_HEADER,
    Gateway,
    Samples,
    breaker_openings,
    drive_auth,
    free_port,
    load_note,
    redis_command,
    redis_stats,
    require_wrk,
    rotating_script,
    start,
    start_redis,
    start_sandbox,
    stop,
    wait_http,
    write_config,
    write_customers,
    wrk,
)

ORIGINAL = f"X-Original-URI: {PREMIUM_URI}"
L1_SET = 50


@dataclass
class Result:
    label: str
    rate: float
    detail: str
    metrics: Samples | None = None
    redis_commands: int = 0
    redis_connections: int = 0
    breaker_openings: int = 0
    redis_state_after: str = ""
    cpu_seconds: float = 0.0


def accounting(result: Result) -> str:
    m = result.metrics
    if m is None:
        return ""
    requests = m.sum("paywall_requests_total")
    parts = [f"{requests:.0f} requests"]
    if requests and result.cpu_seconds:
        parts.append(
            f"gateway CPU {result.cpu_seconds:.1f} s = {result.cpu_seconds / requests * 1e6:.0f} "
            "us/request"
        )
    for cache in ("session", "access"):
        hits = {tier: m.lookups(cache, tier, "hit") for tier in ("l1", "l2")}
        misses = m.lookups(cache, "l2", "miss") + m.lookups(cache, "l1", "miss")
        parts.append(f"{cache}: L1 hit {hits['l1']}, L2 hit {hits['l2']}, miss {misses}")
    parts.append(f"platform calls {m.platform_calls()}")
    parts.append(f"redis errors {m.sum('paywall_redis_errors_total'):.0f}")
    if requests:
        per_request = result.redis_commands / requests
        parts.append(f"redis commands/request {per_request:.2f} (INFO: script reads included)")
    parts.append(f"new redis connections {result.redis_connections}")
    parts.append(f"redis breaker opened {result.breaker_openings} times")
    parts.append(f"/readyz redis after: {result.redis_state_after}")
    return "; ".join(parts)


CALLGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no")


def instrument(pid: int, on: bool) -> None:
    """Callgrind's counting in the gateway ``pid`` (run under :data:`CALLGRIND`) on or off."""
    switch = "on" if on else "off"
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], check=True, capture_output=True)


def start_profile(pid: int, out: Path, duration: int, profiler: str) -> subprocess.Popen[bytes]:
    """``profiler`` recording ``pid`` for ``duration`` seconds into ``out``: py-spy (raw
    format, native frames) or perf (``perf record``, CPU clock, DWARF call graphs: without
    them a profile names only the innermost function, which says little about a compiled
    build whose work is spread over many small ones)."""
    if profiler == "perf":
        command = ["perf", "record", "-F", "499", "--call-graph", "dwarf,16384"]
        command += ["-p", str(pid), "-o", str(out), "--", "sleep", str(duration)]
    else:
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise SystemExit(f"--profile needs py-spy: {spy} is missing (pip install py-spy)")
        command = [str(spy), "record", "--native", "--format", "raw", "--rate", "100"]
        command += ["--duration", str(duration), "--pid", str(pid), "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--max-entries", type=int, default=100, help="[cache] max_entries")
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=None,
        help="[cache] redis_timeout of the measured gateway (default: the gateway's default)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the measured L2-only run into this file (with --profiler); py-spy's "
        "sampling slows the gateway, so that run's figures are not comparable",
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "perf", "callgrind"),
        default="py-spy",
        help="what --profile records with (perf: Debian's linux-perf, as root, with call graphs; "
        "callgrind: the measured gateway runs under valgrind, instructions counted)",
    )
    parser.add_argument(
        "--profile-run",
        choices=("l2", "l1"),
        default="l2",
        help="which run --profile records: the L2-only hit (default) or the L1 hit of one customer",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="the measured gateway writes its access log (off by default)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the data file, configs, Lua scripts and logs here (default: a temporary dir)",
    )
    args = parser.parse_args()
    if not require_wrk():
        return 2
    if args.customers < 2 * args.max_entries or args.max_entries <= L1_SET:
        parser.error("need --customers >= 2 * --max-entries and --max-entries > 50")

    print(f"start: {load_note()}")
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-l2-")))
        else:
            tmp = args.workdir
            tmp.mkdir(parents=True, exist_ok=True)
        customers = write_customers(tmp / "customers.json", args.customers)
        tokens = [token for _, token in customers]
        platform, redis_port, bare = free_port(), free_port(), free_port()
        children = []
        try:
            children.append(start_sandbox(platform, tmp / "customers.json", log=tmp / "sb.log"))
            children.append(start_redis(redis_port, tmp))
            children.append(start([sys.executable, "bench/bare_app.py", str(bare)]))
            wait_http(f"http://127.0.0.1:{bare}/")
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            access = {"default_ttl": 300, "max_ttl": 300}

            # 1. Warm Redis through another process.
            warm_config = tmp / "warm.toml"
            write_config(
                warm_config,
                mode="auth_request",
                platform=platform,
                # Warming is set-up, not measurement: a generous Redis timeout, so that a
                # slow first connection cannot open the warmer's Redis breaker.
                sections={
                    "cache": {"redis_url": redis_url, "redis_timeout": 1.0},
                    "access": access,
                },
            )
            warmer = Gateway(warm_config, log=tmp / "warm.log")
            try:
                failures = asyncio.run(
                    drive_auth([warmer], list(range(args.customers)), customers, 32)
                )
                warmed = warmer.metrics()
            finally:
                warmer.stop()
            if failures:
                raise RuntimeError(f"warming failed: {dict(failures)}")
            keys = int(redis_command(redis_port, "DBSIZE").lstrip(":") or 0)
            print(
                f"warmed Redis through another process: {warmed.platform_calls()} platform "
                f"calls for {args.customers} customers, Redis now holds {keys} keys"
            )
            if keys < 2 * args.customers:  # a session and an access answer per customer
                raise RuntimeError(f"warming left {keys} keys in Redis, not {2 * args.customers}")

            # 2. The measured gateway.
            cache: dict[str, object] = {"redis_url": redis_url, "max_entries": args.max_entries}
            if args.redis_timeout is not None:
                cache["redis_timeout"] = args.redis_timeout
            config = tmp / "measured.toml"
            write_config(
                config,
                mode="auth_request",
                platform=platform,
                access_log=args.access_log,
                sections={"cache": cache, "access": access},
            )
            rotate_all = rotating_script(tmp / "rotate-all.lua", tokens)
            # The L1 customers come last in the big rotation: evicted long before it gets there.
            rotate_l1 = rotating_script(tmp / "rotate-l1.lua", tokens[-L1_SET:])
            one = f"{SESSION_HEADER}: {tokens[-1]}"

            bare_url = f"http://127.0.0.1:{bare}/"
            for label, script in (
                ("bare aiohttp handler", None),
                ("bare, wrk Lua script", rotate_all),
            ):
                rate, detail = wrk(bare_url, [], args.duration, args.connections, script)
                results.append(Result(label, rate, detail))
                print(f"{label:44s}{rate:10.0f} req/s  ({detail})", flush=True)

            callgrind = args.profile is not None and args.profiler == "callgrind"
            if callgrind:
                out = f"--callgrind-out-file={args.profile}"
                gateway = Gateway(
                    config, log=tmp / "measured.log", wrapper=(*CALLGRIND, out), start_timeout=300
                )
            else:
                gateway = Gateway(config, log=tmp / "measured.log")
            try:
                for label, headers, script in (
                    ("gateway L1 hit, 1 customer", [ORIGINAL, one], None),
                    (f"gateway L1 hit, {L1_SET} customers (Lua)", [ORIGINAL], rotate_l1),
                    (
                        f"gateway L2-only hit, {args.customers} customers (Lua)",
                        [ORIGINAL],
                        rotate_all,
                    ),
                ):
                    # 1 s of wrk first: puts the L1 customers into L1 (from L2), and opens the
                    # connections to Redis before the L2 run is measured.
                    wrk(gateway.auth_url, headers, 1, args.connections, script)
                    openings = breaker_openings(tmp / "measured.log")
                    before, redis_before = gateway.metrics(), redis_stats(redis_port)
                    cpu = gateway.cpu_seconds()
                    spy = None
                    profiled = "L2" if args.profile_run == "l2" else "L1 hit, 1 customer"
                    measured = args.profile is not None and profiled in label
                    if measured and callgrind:
                        instrument(gateway.pid, on=True)
                    elif measured:
                        spy = start_profile(gateway.pid, args.profile, args.duration, args.profiler)
                    rate, detail = wrk(
                        gateway.auth_url, headers, args.duration, args.connections, script
                    )
                    if measured and callgrind:
                        instrument(gateway.pid, on=False)
                    cpu = gateway.cpu_seconds() - cpu
                    if spy is not None:
                        spy.wait(timeout=60)
                    metrics = gateway.metrics() - before
                    redis_after = redis_stats(redis_port)
                    readyz = gateway.readyz()
                    result = Result(
                        label,
                        rate,
                        detail,
                        metrics,
                        # less the INFO of the first reading, counted by the second
                        redis_after["commands"] - redis_before["commands"] - 1,
                        redis_after["connections"] - redis_before["connections"] - 1,
                        breaker_openings(tmp / "measured.log") - openings,
                        str(readyz.get("redis", "?")),
                        cpu,
                    )
                    results.append(result)
                    print(f"{label:44s}{rate:10.0f} req/s  ({detail})", flush=True)
                total = gateway.metrics()
            finally:
                gateway.stop()
        finally:
            for child in reversed(children):
                stop(child)

    print(f"end: {load_note()}")
    reference = results[0].rate
    print()
    print(f"{'target':44s}{'req/s':>10s}{'x bare':>8s}  latency")
    for result in results:
        print(
            f"{result.label:44s}{result.rate:10.0f}{result.rate / reference:8.2f}  {result.detail}"
        )
    print()
    for result in results:
        if result.metrics is not None:
            print(f"{result.label}: {accounting(result)}")
    print(f"measured gateway, whole life: platform calls {total.platform_calls()}")
    print(f"L2-only hit / L1 hit (1 customer): {results[-1].rate / results[2].rate:.2f}")

    l2 = results[-1].metrics
    assert l2 is not None
    requests = l2.sum("paywall_requests_total")
    problems = []
    if l2.platform_calls():
        problems.append(f"the platform was asked {l2.platform_calls()} times")
    for name in ("session", "access"):
        if l2.lookups(name, "l2", "hit") < 0.99 * requests:
            problems.append(
                f"only {l2.lookups(name, 'l2', 'hit')} of {requests:.0f} {name} lookups hit L2"
            )
    if problems:
        errors = l2.sum("paywall_redis_errors_total")
        print(
            "L2-only run is not what it claims: " + "; ".join(problems) + f" (Redis errors "
            f"{errors:.0f}, the Redis breaker opened {results[-1].breaker_openings} times: "
            "a failed or skipped Redis read is an L2 miss, so the platform answers)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
