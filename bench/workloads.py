"""The scenarios that are not a plain throughput ratio.

* ``latency``: p50/p99 of a cached decision at half the bare handler's max load, next to the
  bare handler at the same rate (open loop, bench/loadgen.py); the added latency is the
  difference per round.
* ``spike``: 1,000 concurrent cold requests for one customer over two processes sharing Redis,
  with the simulator answering in 0.5 s: the simulator's own call counter must show exactly one
  session validation and one hasAccess call (tests/integration/test_two_processes.py, as a
  measurement).
* ``zipf``: 200,000 requests, customers drawn from Zipf(1.1) over 20,000, the platform at
  80 ms, against the naive pattern (one hasAccess call per request, same concurrency).
* ``hot``: 20 hot customers at 1,000 requests a second (open loop), entries living 2 s, while
  the platform answers in 100 ms: refresh-ahead on, against the same load with lifetimes longer
  than the run (nothing to refresh), and refresh-ahead off (informational: what it saves).
* ``memory``: RSS of a `serve` process before and after 100,000 distinct customers were
  cached in L1.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import aiohttp
import loadgen
from common import (
    PREMIUM_URI,
    SESSION_HEADER,
    Gateway,
    cpu_seconds,
    rss_bytes,
    run_wrk,
    zipf_sequence,
)
from context import Bench
from report import ChartPoint, InvalidRun, Row, number, ratio_text, spread
from throughput import GatewayProbe

HOST = "127.0.0.1"
GRANTED = b"X-Paywall-Access: granted"


def auth_job(port: int, customer_id: str, token: str) -> loadgen.Job:
    """GET /_paywall/auth for the premium page as that customer; passes if granted to them."""
    request = loadgen.get_request(
        f"{HOST}:{port}",
        "/_paywall/auth",
        [("X-Original-URI", PREMIUM_URI), (SESSION_HEADER, token)],
    )
    return loadgen.Job(request, b"X-Paywall-Customer-Id: " + customer_id.encode())


def _all_passed(result: loadgen.LoadResult, what: str) -> None:
    if result.failures:
        raise InvalidRun(f"invalid run: {what}: unexpected answers {dict(result.failures)}")


# --- added latency at half load ------------------------------------------------------------


def added_latency(bench: Bench) -> None:
    options = bench.options
    platform = bench.simulator(0.0, options.l2_customers)
    customer_id, token = bench.seed(options.l2_customers)[1][0]
    with bench.scope() as children:
        bare_server = children.bare_app(log=bench.path("bare-latency.log"))
        bare = bare_server.port
        gateway = children.gateway(
            bench.config("latency", platform=platform), log=bench.path("latency.log")
        )
        if bench.bare_max is None:  # the auth scenario did not run: measure the max here
            bench.bare_max = run_wrk(
                f"http://{HOST}:{bare}/", [], options.duration, options.connections
            ).rate
        rate = bench.bare_max / 2
        bare_job = loadgen.Job(loadgen.get_request(f"{HOST}:{bare}", PREMIUM_URI))
        gateway_job = auth_job(gateway.port, customer_id, token)
        # Warm-up: caches filled, connections opened, both processes past their first requests.
        for port, job in ((bare, bare_job), (gateway.port, gateway_job)):
            warm = loadgen.open_loop(HOST, port, [job], rate, 1.0)
            _all_passed(warm, "warm-up")
        probe = GatewayProbe(gateway, connections=64)
        rounds: list[dict[str, Any]] = []
        for round_ in range(options.rounds):
            measured: dict[str, Any] = {"round": round_ + 1}
            for label, port, pid, job in (
                ("bare", bare, bare_server.pid, bare_job),
                ("gateway", gateway.port, gateway.pid, gateway_job),
            ):
                if label == "gateway":
                    probe.before()
                cpu = cpu_seconds(pid)
                result = loadgen.open_loop(HOST, port, [job], rate, options.duration)
                # How much of a core the server needed at this rate (every thread of it).
                busy = (cpu_seconds(pid) - cpu) / result.seconds if result.seconds else 0.0
                _all_passed(result, label)
                if label == "gateway":
                    measured["gateway_metrics"] = probe.after(result.requests)
                measured[label] = {**result.summary(), "cpu_share": round(busy, 3)}
                bench.log(
                    f"  latency round {round_ + 1}: {label} at {rate:,.0f} req/s: p50 "
                    f"{result.percentile(50):.2f} ms, p99 {result.percentile(99):.2f} ms, "
                    f"{100 * busy:.0f} % of a core"
                )
            rounds.append(measured)
    bench.results.raw["latency"] = {"rate": rate, "bare_max": bench.bare_max, "rounds": rounds}
    added = {
        p: [r["gateway"][f"{p}_ms"] - r["bare"][f"{p}_ms"] for r in rounds] for p in ("p50", "p99")
    }

    def both(label: str) -> str:
        p50 = spread([r[label]["p50_ms"] for r in rounds])[0]
        p99 = spread([r[label]["p99_ms"] for r in rounds])[0]
        busy = spread([r[label]["cpu_share"] for r in rounds])[0]
        return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {100 * busy:.0f} % of a core"

    p99, low, high = spread(added["p99"])
    lag = max(r[label]["behind_s"] for r in rounds for label in ("bare", "gateway")) * 1000
    bench.results.add(
        Row(
            scenario=f"7. added latency of a cached decision at {number(rate)} req/s "
            "(half the bare handler's max)",
            figure=f"added p50 {spread(added['p50'])[0]:.2f} ms, added p99 {p99:.2f} ms "
            f"[{low:.2f}-{high:.2f}] (gateway {both('gateway')})",
            reference=f"bare aiohttp handler at the same rate: {both('bare')}; generator lag "
            f"max {lag:.1f} ms"
            + (
                f"; the gateway's own max (row 1): {number(bench.gateway_max)} req/s"
                if bench.gateway_max
                else ""
            ),
            ratio="p99 "
            + ratio_text([r["gateway"]["p99_ms"] / r["bare"]["p99_ms"] for r in rounds]),
            target="added p99 ≤ 2 ms",
            met=p99 <= 2.0,
            chart=ChartPoint(
                "lower", max(p99, 0) / 2.0, max(low, 0) / 2.0, max(high, 0) / 2.0, 1.0
            ),
            chart_label="7. added p99 / 2 ms",
        )
    )


# --- a cold spike on two processes ---------------------------------------------------------


def cold_spike(bench: Bench) -> None:
    options = bench.options
    with bench.scope() as children:
        seeded = max(10, options.rounds + 1)
        platform = bench.simulator(0.5, seeded, children)
        _, customers = bench.seed(seeded)
        redis_port = bench.redis(children)
        config = bench.config(
            "spike", platform=platform, cache={"redis_url": f"redis://{HOST}:{redis_port}/0"}
        )
        gateways = [children.gateway(config, log=bench.path(f"spike-{n}.log")) for n in (1, 2)]
        rounds = asyncio.run(_spikes(bench, platform, gateways, customers))
    bench.results.raw["spike"] = rounds
    measured = [r for r in rounds if not r["warm_up"]]
    exact = all(
        r["calls"] == {"validateCustomerSession": 1, "checkAccessOfCustomer": 1} for r in measured
    )
    totals = [sum(r["calls"].values()) for r in measured]
    seconds = spread([r["seconds"] for r in measured])
    calls = ", ".join(
        f"{r['calls'].get('validateCustomerSession', 0)}+"
        f"{r['calls'].get('checkAccessOfCustomer', 0)}"
        for r in measured
    )
    warm = rounds[0]["calls"]
    bench.results.add(
        Row(
            scenario=f"8. {options.spike:,} concurrent cold requests for one customer, "
            "2 processes + Redis",
            figure=f"validation+hasAccess calls per round: {calls}; all {options.spike:,} "
            f"answered in {seconds[0]:.2f} s [{seconds[1]:.2f}-{seconds[2]:.2f}]",
            reference=f"platform answering in 0.5 s (a cold answer: 2 calls, ≥ 1.0 s); "
            f"first spike on fresh processes (opens the connections): {_calls_text(warm)}",
            target="exactly 1 hasAccess + 1 validation",
            met=exact,
            chart=ChartPoint("lower", spread(totals)[0] / 2, min(totals) / 2, max(totals) / 2, 1.0),
            chart_label="8. cold spike calls / 2",
        )
    )


def _calls_text(calls: dict[str, int]) -> str:
    return (
        f"{calls.get('validateCustomerSession', 0)} validation + "
        f"{calls.get('checkAccessOfCustomer', 0)} hasAccess"
    )


async def _spikes(
    bench: Bench, platform: int, gateways: list[Gateway], customers: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """A spike on customer 0 (warm-up: opens the connections), then one per round on a fresh
    customer; each spike's platform calls from the simulator's counter."""
    spike = bench.options.spike
    calls_url = f"http://{HOST}:{platform}/_sandbox/calls"
    connector = aiohttp.TCPConnector(limit=2 * spike)
    timeout = aiohttp.ClientTimeout(total=30)
    rounds: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        for n in range(bench.options.rounds + 1):
            customer_id, token = customers[n]
            async with http.delete(calls_url) as reset:
                await reset.read()
            headers = {"X-Original-URI": f"/premium/spike-{n}", SESSION_HEADER: token}

            async def one(gateway: Gateway, headers: dict[str, str] = headers) -> tuple[Any, ...]:
                async with http.get(gateway.auth_url, headers=headers) as answer:
                    await answer.read()
                    return (
                        answer.status,
                        answer.headers.get("X-Paywall-Access"),
                        answer.headers.get("X-Paywall-Customer-Id"),
                    )

            started = time.monotonic()
            tasks = []
            for first in range(0, spike, 100):  # created in batches, as the test does
                tasks += [
                    asyncio.create_task(one(gateways[i % 2])) for i in range(first, first + 100)
                ]
                await asyncio.sleep(0)
            answers = Counter(await asyncio.gather(*tasks))
            seconds = time.monotonic() - started
            async with http.get(calls_url) as counted:
                calls = (await counted.json())["calls"]
            if answers != {(200, "granted", customer_id): spike}:
                raise InvalidRun(f"invalid run: spike {n}: answers {dict(answers)}")
            rounds.append({"warm_up": n == 0, "seconds": seconds, "calls": calls})
            kind = "warm-up" if n == 0 else "measured"
            bench.log(f"  spike {n} ({kind}): {_calls_text(calls)}, {seconds:.2f} s")
    return rounds


# --- Zipf against the naive pattern --------------------------------------------------------


def zipf(bench: Bench) -> None:
    options = bench.options
    n_customers, n_requests = options.zipf_customers, options.zipf_requests
    concurrency = options.zipf_concurrency
    sequence = zipf_sequence(n_customers, n_requests, 1.1, 20240611)
    distinct = len(set(sequence))
    with bench.scope() as children:
        platform = bench.simulator(0.08, n_customers, children)
        _, customers = bench.seed(n_customers)
        session_ttl, access_ttl, window = 300, 60, 10.0  # the gateway's defaults
        naive_job = {
            i: loadgen.Job(
                loadgen.get_request(
                    f"{HOST}:{platform}",
                    f"/api/v3.0/accessRights/{customers[i][0]}/hasAccess?accessRightUniqueIds=premium",
                )
            )
            for i in set(sequence)
        }
        naive_jobs = [naive_job[i] for i in sequence]
        rounds: list[dict[str, Any]] = []
        for round_ in range(options.rounds):
            gateway = children.gateway(
                bench.config("zipf", platform=platform), log=bench.path(f"zipf-{round_}.log")
            )
            per_customer = {i: auth_job(gateway.port, *customers[i]) for i in set(sequence)}
            jobs = [per_customer[i] for i in sequence]
            before = gateway.metrics()
            result = loadgen.closed_loop(HOST, gateway.port, jobs, concurrency, 900)
            m = gateway.metrics() - before
            children.stop(gateway)
            _all_passed(result, "gateway")
            if result.requests != n_requests:
                raise InvalidRun(f"invalid run: {result.requests} of {n_requests} answered")
            seconds = result.seconds
            bound = distinct * (1 + math.floor(seconds / (session_ttl - window))) + distinct * (
                1 + math.floor(seconds / (access_ttl - window))
            )
            naive = loadgen.closed_loop(HOST, platform, naive_jobs, concurrency, options.duration)
            _all_passed(naive, "naive")
            rounds.append(
                {
                    "round": round_ + 1,
                    "gateway": result.summary(),
                    "platform_calls": m.platform_calls(),
                    "validate_session": m.platform_calls("validate_session"),
                    "has_access": m.platform_calls("has_access"),
                    "coalesced": m.sum("paywall_coalesced_total"),
                    "bound": bound,
                    "naive": naive.summary(),
                }
            )
            bench.log(
                f"  zipf round {round_ + 1}: gateway {result.rate:,.0f} req/s, p99 "
                f"{result.percentile(99):.1f} ms, {m.platform_calls():,} platform calls (bound "
                f"{bound:,}); naive {naive.rate:,.0f} req/s, p99 {naive.percentile(99):.1f} ms"
            )
    bench.results.raw["zipf"] = {"distinct_customers": distinct, "rounds": rounds}
    calls = [r["platform_calls"] for r in rounds]
    bounds = [r["bound"] for r in rounds]
    fractions = [c / b for c, b in zip(calls, bounds, strict=True)]

    def load(label: str) -> str:
        rate = spread([r[label]["rate"] for r in rounds])[0]
        p99 = spread([r[label]["p99_ms"] for r in rounds])[0]
        return f"{number(rate)} req/s, p99 {p99:.1f} ms"

    bench.results.add(
        Row(
            scenario=f"9. Zipf(1.1): {n_requests:,} requests over {n_customers:,} customers, "
            f"platform 80 ms, {concurrency} concurrent",
            figure=f"gateway: {load('gateway')}; platform calls {number(spread(calls)[0])} "
            f"[{number(min(calls))}-{number(max(calls))}] for {distinct:,} distinct customers "
            f"(bound {number(max(bounds))})",
            reference=f"naive, one hasAccess call per request ({options.duration} s of the same "
            f"sequence): {load('naive')}",
            ratio="req/s "
            + ratio_text([r["gateway"]["rate"] / r["naive"]["rate"] for r in rounds], 1),
            target="platform calls ≤ distinct keys x (1 + revalidations)",
            met=all(c <= b for c, b in zip(calls, bounds, strict=True)),
            chart=ChartPoint("lower", spread(fractions)[0], min(fractions), max(fractions), 1.0),
            chart_label="9. Zipf calls / bound",
        )
    )


# --- hot customers while the platform is slow ----------------------------------------------


def hot_customers(bench: Bench) -> None:
    """Open loop at ``hot_rate`` requests a second (a busy site, well below saturation, so
    that p99 shows who waited, not the queue of a saturated server), rotating over the hot
    customers."""
    options = bench.options
    count, rate = options.hot_customers, options.hot_rate
    duration = max(options.duration, 4)  # at least two lifetimes of the short entries
    with bench.scope() as children:
        platform = bench.simulator(0.1, count, children)
        _, customers = bench.seed(count)
        short: dict[str, object] = {"default_ttl": 2, "max_ttl": 300}
        variants: dict[str, tuple[dict[str, object], dict[str, object]]] = {
            "refresh-ahead": ({"session_ttl": 2, "refresh_ahead": 1.0}, short),
            "nothing expires": ({"session_ttl": 300}, {"default_ttl": 300, "max_ttl": 300}),
            "refresh-ahead off": ({"session_ttl": 2, "refresh_ahead": 0.0}, short),
        }
        gateways = {
            label: children.gateway(
                bench.config(f"hot-{n}", platform=platform, cache=cache, access=access),
                log=bench.path(f"hot-{n}.log"),
            )
            for n, (label, (cache, access)) in enumerate(variants.items())
        }
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in gateways}
        for round_ in range(options.rounds):
            for label, gateway in gateways.items():
                jobs = [auth_job(gateway.port, *customer) for customer in customers]
                # 1 s of the same load first: the entries are fresh when the measurement starts,
                # as they are for hot customers; every expiry is then inside the run.
                _all_passed(loadgen.open_loop(HOST, gateway.port, jobs, rate, 1.0), label)
                before = gateway.metrics()
                result = loadgen.open_loop(HOST, gateway.port, jobs, rate, duration)
                m = gateway.metrics() - before
                _all_passed(result, f"hot, {label}")
                facts: dict[str, Any] = {
                    "round": round_ + 1,
                    **result.summary(),
                    "platform_calls": m.platform_calls(),
                    "refreshes_started": m.sum("paywall_refreshes_total", result="started"),
                    "refreshes_succeeded": m.sum("paywall_refreshes_total", result="succeeded"),
                    "l1_misses": m.lookups("access", "l1", "miss")
                    + m.lookups("session", "l1", "miss"),
                }
                problems = []
                if label == "nothing expires" and m.platform_calls():
                    problems.append("the platform was asked")
                if label != "nothing expires" and not m.platform_calls():
                    problems.append("no entry expired or was refreshed")
                if label == "refresh-ahead" and not facts["refreshes_succeeded"]:
                    problems.append("no refresh-ahead happened")
                if problems:
                    raise InvalidRun(f"invalid run: hot, {label}: " + "; ".join(problems))
                runs[label].append(facts)
                bench.log(
                    f"  hot round {round_ + 1}: {label}: p99 {result.percentile(99):.1f} ms, "
                    f"{m.platform_calls()} platform calls, {facts['l1_misses']} L1 misses"
                )
    bench.results.raw["hot"] = {"rate": rate, "seconds": duration, "runs": runs}
    pairs = list(zip(runs["refresh-ahead"], runs["nothing expires"], strict=True))
    added = [a["p99_ms"] - b["p99_ms"] for a, b in pairs]
    median, low, high = spread(added)

    def p99(label: str) -> str:
        values = [run["p99_ms"] for run in runs[label]]
        return f"p99 {spread(values)[0]:.1f} ms [{min(values):.1f}-{max(values):.1f}]"

    misses = sum(run["l1_misses"] for run in runs["refresh-ahead"])
    bench.results.add(
        Row(
            scenario=f"10. {count} hot customers at {number(rate)} req/s, entries living 2 s, "
            "platform answering in 100 ms",
            figure=f"refresh-ahead (1 s window): {p99('refresh-ahead')}, {misses} lookups "
            f"waited for the platform; p99 {median:+.2f} ms [{low:+.2f} to {high:+.2f}] "
            f"against the reference; refresh-ahead off: {p99('refresh-ahead off')}",
            reference=f"same load, nothing expiring: {p99('nothing expires')}",
            ratio="p99 " + ratio_text([a["p99_ms"] / b["p99_ms"] for a, b in pairs]),
            target="p99 unchanged (at most 2 ms above the reference's)",
            met=median <= 2.0,
            chart=ChartPoint("lower", max(median, 0) / 2, max(low, 0) / 2, max(high, 0) / 2, 1.0),
            chart_label="10. hot: added p99 / 2 ms",
        )
    )


# --- memory of 100,000 cached customers ----------------------------------------------------


def memory(bench: Bench) -> None:
    options = bench.options
    count = options.memory_customers
    limit_mb = 100 * count / 100_000  # the target is 100 MB for 100,000 customers
    with bench.scope() as children:
        platform = bench.simulator(0.0, count, children)
        _, customers = bench.seed(count)
        gateway = children.gateway(
            bench.config(
                "memory",
                platform=platform,
                cache={"max_entries": max(100_000, count)},
                access={"default_ttl": 300, "max_ttl": 300},
            ),
            log=bench.path("memory.log"),
        )
        jobs = [auth_job(gateway.port, *customer) for customer in customers]
        warm = 200  # the first customers: code paths, connections and pools in place
        _all_passed(loadgen.closed_loop(HOST, gateway.port, jobs[:warm], 16, 120), "warm-up")
        time.sleep(1)
        before_rss = rss_bytes(gateway.process.pid)
        before = gateway.metrics()
        started = time.monotonic()
        fill = loadgen.closed_loop(HOST, gateway.port, jobs[warm:], 64, 900)
        _all_passed(fill, "fill")
        filled = gateway.metrics() - before
        time.sleep(1)
        after_rss = rss_bytes(gateway.process.pid)
        fill_seconds = time.monotonic() - started
        # Proof that they are cached: a second look at a sample asks nobody.
        sample = jobs[warm :: max(1, count // 2000)]
        before = gateway.metrics()
        _all_passed(loadgen.closed_loop(HOST, gateway.port, sample, 16, 120), "second look")
        again = gateway.metrics() - before
    new = count - warm
    problems = []
    if (
        filled.platform_calls("has_access") != new
        or filled.platform_calls("validate_session") != new
    ):
        problems.append(
            f"filling {new} customers made {filled.platform_calls('validate_session')} "
            f"validations and {filled.platform_calls('has_access')} hasAccess calls"
        )
    if again.platform_calls() or again.lookups("access", "l1", "hit") != len(sample):
        problems.append(
            f"second look at {len(sample)}: {again.lookups('access', 'l1', 'hit')} L1 hits, "
            f"{again.platform_calls()} platform calls"
        )
    growth = (after_rss - before_rss) / 1e6
    bench.results.raw["memory"] = {
        "customers": count,
        "rss_before": before_rss,
        "rss_after": after_rss,
        "fill": fill.summary(),
        "fill_seconds": fill_seconds,
        "second_look": len(sample),
    }
    if problems:
        raise InvalidRun("invalid run: memory: " + "; ".join(problems))
    bench.results.add(
        Row(
            scenario=f"11. memory: {count:,} distinct customers cached in L1 (one process)",
            figure=f"RSS +{growth:.1f} MB ({before_rss / 1e6:.0f} → {after_rss / 1e6:.0f} MB), "
            f"{(after_rss - before_rss) / new:,.0f} bytes per customer",
            reference=f"one round (filling takes {fill_seconds:.0f} s)",
            target=f"≤ {limit_mb:g} MB RSS growth",
            met=growth <= limit_mb,
            chart=ChartPoint("lower", growth / limit_mb, growth / limit_mb, growth / limit_mb, 1.0),
            chart_label=f"11. RSS growth / {limit_mb:g} MB",
        )
    )
