"""The throughput scenarios: wrk (-t1, the same connections) against a scenario and its
reference, interleaved: each round runs every target once, back to back, and a round's ratio
is the scenario's req/s over the reference's in that round.

Every run must be clean (wrk: no non-2xx/3xx answer, no socket error), and a gateway's /metrics
must account for it: every request decided and granted, answered from the cache tier the
scenario claims, no platform call (or, behind nginx's cache, almost no request reached the
gateway at all). Anything else raises :class:`~report.InvalidRun`: no figure from a
misconfigured run.

Each run also records the CPU time (user + system, /proc) its serving processes used during
the wrk run per request wrk counted, ``cpu_us_per_request``: the gateway or the reference
server (plus nginx's workers behind nginx; never the content server). A ratio row shows the
medians and their quotient, the CPU ratio (reference / gateway: higher is better, like the
throughput ratio). It is steadier than the throughput ratio on a noisy machine, but the
verdict stays the throughput ratio.

1. ``auth``: /_paywall/auth, L1 hit, access log on (the default) and off, next to
   bench/bare_app.py.
2. ``proxy``: proxy mode, L1 hit, next to bench/bare_proxy.py, both in front of the content
   server.
3. ``l2``: /_paywall/auth answered from Redis only (L1 of 100 entries, 2,000 customers in
   turn, Redis warmed by another process), next to the bare handler driven by the same wrk
   Lua script; Redis commands per request from INFO commandstats.
4. ``nginx``: deploy/nginx/paywall-auth.conf with the gateway, next to the same file with a
   bare aiohttp handler (always 200) as the auth server.
5. ``nginx-cached``: deploy/nginx/paywall-auth-cached.conf with the gateway, next to nginx
   proxying straight to the content server, and nginx answering 204 itself (the limits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common import (
    PREMIUM_URI,
    SESSION_HEADER,
    Gateway,
    Samples,
    cpu_seconds,
    drive_auth,
    redis_client_commands,
    redis_command,
    redis_commands_between,
    redis_commandstats,
    rotating_script,
    run_wrk,
)
from context import ORIGINAL_URI, Bench
from report import ChartPoint, InvalidRun, Row, number, ratio_text, spread
from servers import CACHED_CONFIG, PLAIN_CONFIG, direct_site, shipped_site, status_204_site
from servers import start_nginx as nginx_in


class Probe(Protocol):
    def before(self) -> None: ...
    def after(self, requests: int) -> dict[str, Any]: ...


@dataclass
class Target:
    label: str
    url: str
    headers: list[str] = field(default_factory=list)
    script: Path | None = None
    probe: Probe | None = None
    pids: list[int] = field(default_factory=list)  # the serving processes, for their CPU time


class GatewayProbe:
    """Reads the gateway's /metrics (and Redis's INFO commandstats) around a run and checks
    that the gateway decided every request wrk counted, granted each, from ``tier``, and asked
    the platform for none of them (background refreshes aside). ``behind_nginx_cache``:
    instead, that nginx answered nearly all of them from its cache (the gateway decided at
    most 1 %)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        tier: str = "l1",
        connections: int,
        redis_port: int | None = None,
        behind_nginx_cache: bool = False,
    ) -> None:
        self.gateway = gateway
        self.tier = tier
        self.connections = connections
        self.redis_port = redis_port
        self.behind_nginx_cache = behind_nginx_cache

    def before(self) -> None:
        self._metrics = self.gateway.metrics()
        self._cpu = self.gateway.cpu_seconds()
        if self.redis_port is not None:
            self._redis = redis_commandstats(self.redis_port)

    def after(self, requests: int) -> dict[str, Any]:
        """Facts about the run since :meth:`before`, in which the client counted
        ``requests`` answers; InvalidRun if they are not what the scenario claims."""
        m: Samples = self.gateway.metrics() - self._metrics
        decided = int(m.sum("paywall_requests_total"))
        granted = int(m.sum("paywall_requests_total", outcome="granted"))
        facts: dict[str, Any] = {
            "decided": decided,
            "granted": granted,
            "platform_calls": m.platform_calls(),
            "gateway_cpu_s": round(self.gateway.cpu_seconds() - self._cpu, 2),
            "lookups": {
                f"{cache}_{tier}_{outcome}": m.lookups(cache, tier, outcome)
                for cache in ("session", "access")
                for tier in ("l1", "l2")
                for outcome in ("hit", "miss")
                if m.lookups(cache, tier, outcome)
            },
        }
        problems = []
        if self.behind_nginx_cache:
            if decided > 0.01 * requests + 5:
                problems.append(f"the gateway decided {decided} of {requests} requests")
        else:
            # wrk stops counting at the end of its duration: the gateway may have decided the
            # last few requests of each connection that wrk no longer read.
            if not requests <= decided <= requests + 2 * self.connections + 5:
                problems.append(f"the gateway decided {decided} requests, wrk counted {requests}")
            if granted != decided:
                problems.append(f"only {granted} of {decided} requests were granted")
            for cache in ("session", "access"):
                hits = m.lookups(cache, self.tier, "hit")
                if hits < 0.99 * decided:
                    problems.append(f"only {hits} of {decided} {cache} lookups hit {self.tier}")
        # A hot entry near its end is refreshed in the background (refresh-ahead, 10 s before
        # the 60 s an access answer lives by default): that call makes no request wait. Any
        # other platform call would be a request answered from the platform.
        refreshes = int(m.sum("paywall_refreshes_total", result="started"))
        facts["refreshes"] = refreshes
        if m.platform_calls() > refreshes + 2:  # + a refresh started just before the run
            problems.append(
                f"the platform was asked {m.platform_calls()} times ({refreshes} refreshes)"
            )
        if self.redis_port is not None:
            commands = redis_commands_between(self._redis, redis_commandstats(self.redis_port))
            facts["redis_commands"] = commands
            facts["redis_commands_per_request"] = sum(commands.values()) / max(1, decided)
        if problems:
            raise InvalidRun("invalid run: " + "; ".join(problems))
        return facts


def interleave(bench: Bench, name: str, targets: list[Target]) -> dict[str, list[dict[str, Any]]]:
    """Every target once per round, ``rounds`` rounds, after a 1 s warm-up of each (fills the
    caches, opens the connections). Returns each target's runs; raw numbers go to results.
    The CPU time of a target's ``pids`` is read right around wrk (after the probe's reading
    before the run, before its reading after)."""
    options = bench.options
    for target in targets:
        warm = run_wrk(target.url, target.headers, 1, options.connections, target.script)
        if not warm.clean:
            raise InvalidRun(f"invalid run: warm-up of {target.label}: {warm.output}")
    runs: dict[str, list[dict[str, Any]]] = {target.label: [] for target in targets}
    for round_ in range(options.rounds):
        for target in targets:
            if target.probe is not None:
                target.probe.before()
            cpu = sum(cpu_seconds(pid) for pid in target.pids)
            result = run_wrk(
                target.url, target.headers, options.duration, options.connections, target.script
            )
            cpu = sum(cpu_seconds(pid) for pid in target.pids) - cpu
            if not result.clean:
                raise InvalidRun(
                    f"invalid run: {target.label}: {result.non_2xx_3xx} non-2xx/3xx answers, "
                    f"socket errors: {result.socket_errors or 'none'}"
                )
            facts = target.probe.after(result.requests) if target.probe is not None else {}
            if target.pids:
                facts["cpu_us_per_request"] = round(cpu / result.requests * 1e6, 2)
            runs[target.label].append({"round": round_ + 1, **result.summary(), **facts})
            bench.log(f"  {name} round {round_ + 1}: {target.label}: {result.rate:,.0f} req/s")
    bench.results.raw[name] = runs
    return runs


def rates(runs: list[dict[str, Any]]) -> list[float]:
    return [run["rate"] for run in runs]


def ratios(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[float]:
    return [a["rate"] / b["rate"] for a, b in zip(runs, reference, strict=True)]


def rate_text(runs: list[dict[str, Any]]) -> str:
    median, low, high = spread(rates(runs))
    p99 = spread([run["p99_ms"] for run in runs])[0]
    return f"{number(median)} req/s [{number(low)}-{number(high)}], p99 {p99:.1f} ms"


def cpu_text(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> str:
    """The medians of CPU µs per request of a target and its reference, and their quotient
    reference / target (the CPU ratio)."""
    mine = spread([run["cpu_us_per_request"] for run in runs])[0]
    theirs = spread([run["cpu_us_per_request"] for run in reference])[0]
    return (
        f"CPU per request {mine:.1f} µs, reference {theirs:.1f} µs: CPU ratio {theirs / mine:.2f}"
    )


def ratio_row(
    scenario: str,
    label: str,
    runs: list[dict[str, Any]],
    reference_label: str,
    reference: list[dict[str, Any]],
    target: float | None,
    chart_label: str,
) -> Row:
    values = ratios(runs, reference)
    median, low, high = spread(values)
    figure = f"{label}: {rate_text(runs)}"
    if all(run.get("cpu_us_per_request") for run in runs + reference):  # 0: no /proc
        figure += f"; {cpu_text(runs, reference)}"
    return Row(
        scenario=scenario,
        figure=figure,
        reference=f"{reference_label}: {rate_text(reference)}",
        ratio=ratio_text(values, _digits(median, target)),
        target=f"≥ {target:.2f} x" if target is not None else "— (informational)",
        met=median >= target if target is not None else None,
        chart=ChartPoint("higher", median, low, high, target if target is not None else 0.0),
        chart_label=chart_label,
    )


def _digits(median: float, target: float | None) -> int:
    """Decimals for a ratio: two, or as many as it takes (up to six) for a median that misses
    its target not to read as the target (0.8955 against 0.90 is shown as 0.895)."""
    digits = 2
    if target is not None and median < target:
        while digits < 6 and f"{median:.{digits}f}" == f"{target:.{digits}f}":
            digits += 1
    return digits


def auth_headers(token: str) -> list[str]:
    return [ORIGINAL_URI, f"{SESSION_HEADER}: {token}"]


# --- the scenarios -----------------------------------------------------------------------------


def auth_endpoint(bench: Bench) -> None:
    """Rows 1 and 2: /_paywall/auth, L1 hit, access log on and off, against bare_app.py."""
    options = bench.options
    platform = bench.simulator(0.0, options.l2_customers)
    _, customers = bench.seed(options.l2_customers)
    headers = auth_headers(customers[0][1])
    with bench.scope() as children:
        bare = children.bare_app(log=bench.path("bare.log"))
        logged = children.gateway(
            bench.config("auth-log", platform=platform), log=bench.path("auth-log.log")
        )
        quiet = children.gateway(
            bench.config("auth-quiet", platform=platform, access_log=False),
            log=bench.path("auth-quiet.log"),
        )
        c = options.connections
        runs = interleave(
            bench,
            "auth",
            [
                Target("bare", f"http://127.0.0.1:{bare.port}/", pids=[bare.pid]),
                Target(
                    "log on",
                    logged.auth_url,
                    headers,
                    probe=GatewayProbe(logged, connections=c),
                    pids=[logged.pid],
                ),
                Target(
                    "log off",
                    quiet.auth_url,
                    headers,
                    probe=GatewayProbe(quiet, connections=c),
                    pids=[quiet.pid],
                ),
            ],
        )
    bench.bare_max = spread(rates(runs["bare"]))[0]
    bench.gateway_max = spread(rates(runs["log on"]))[0]
    bench.results.add(
        ratio_row(
            "1. auth endpoint, L1 hit, defaults (access log on)",
            "gateway",
            runs["log on"],
            "bare aiohttp handler",
            runs["bare"],
            0.80,
            "1. auth L1 hit",
        )
    )
    bench.results.add(
        ratio_row(
            "2. auth endpoint, L1 hit, access log off",
            "gateway",
            runs["log off"],
            "bare aiohttp handler",
            runs["bare"],
            None,
            "2. auth, log off",
        )
    )


def proxy_mode(bench: Bench) -> None:
    """Row 3: proxy mode, L1 hit, against bench/bare_proxy.py, same content server."""
    options = bench.options
    platform = bench.simulator(0.0, options.l2_customers)
    _, customers = bench.seed(options.l2_customers)
    content = bench.content
    with bench.scope() as children:
        bare = children.bare_proxy(content, log=bench.path("bare-proxy.log"))
        gateway = children.gateway(
            bench.config("proxy", mode="proxy", platform=platform, upstream=content),
            log=bench.path("proxy.log"),
        )
        session = [f"{SESSION_HEADER}: {customers[0][1]}"]
        runs = interleave(
            bench,
            "proxy",
            [
                Target(
                    "bare proxy",
                    f"http://127.0.0.1:{bare.port}{PREMIUM_URI}",
                    session,
                    pids=[bare.pid],
                ),
                Target(
                    "gateway",
                    f"http://127.0.0.1:{gateway.port}{PREMIUM_URI}",
                    session,
                    probe=GatewayProbe(gateway, connections=options.connections),
                    pids=[gateway.pid],
                ),
            ],
        )
    bench.results.add(
        ratio_row(
            "3. proxy mode, L1 hit, defaults",
            "gateway",
            runs["gateway"],
            "bare aiohttp streaming proxy",
            runs["bare proxy"],
            0.85,
            "3. proxy L1 hit",
        )
    )


def l2_only(bench: Bench) -> None:
    """Row 4: every lookup answered by Redis (see bench/l2_hit.py for the set-up)."""
    options = bench.options
    count = options.l2_customers
    platform = bench.simulator(0.0, count)
    _, customers = bench.seed(count)
    tokens = [token for _, token in customers]
    access = {"default_ttl": 300, "max_ttl": 300}
    with bench.scope() as children:
        redis_port = bench.redis(children)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        # Warming is set-up: a generous Redis timeout, so a slow first connection cannot open
        # the warmer's Redis breaker.
        warmer = children.gateway(
            bench.config(
                "l2-warm",
                platform=platform,
                cache={"redis_url": redis_url, "redis_timeout": 1.0},
                access=access,
            ),
            log=bench.path("l2-warm.log"),
        )
        failures = asyncio.run(drive_auth([warmer], list(range(count)), customers, 32))
        children.stop(warmer)
        keys = int(redis_command(redis_port, "DBSIZE").lstrip(":") or 0)
        if failures or keys < 2 * count:
            raise InvalidRun(f"invalid run: warming Redis: {dict(failures)}, {keys} keys")
        gateway = children.gateway(
            bench.config(
                "l2",
                platform=platform,
                cache={"redis_url": redis_url, "max_entries": 100},
                access=access,
            ),
            log=bench.path("l2.log"),
        )
        bare = children.bare_app(log=bench.path("bare-l2.log"))
        rotate = rotating_script(bench.path("rotate-all.lua"), tokens)
        runs = interleave(
            bench,
            "l2",
            [
                Target(
                    "bare, same Lua script",
                    f"http://127.0.0.1:{bare.port}/",
                    script=rotate,
                    pids=[bare.pid],
                ),
                Target(
                    "gateway",
                    gateway.auth_url,
                    [ORIGINAL_URI],
                    rotate,
                    GatewayProbe(
                        gateway, tier="l2", connections=options.connections, redis_port=redis_port
                    ),
                    pids=[gateway.pid],
                ),
            ],
        )
        trips = client_round_trips(bench, gateway, redis_port, rotate)
    row = ratio_row(
        f"4. L2-only hit ({count:,} customers in turn, L1 of 100)",
        "gateway",
        runs["gateway"],
        "bare aiohttp handler, same wrk Lua script",
        runs["bare, same Lua script"],
        0.50,
        "4. L2-only hit",
    )
    row.figure += (
        f"; Redis commands from clients per request {trips['per_request']:.2f} "
        f"({trips['text']}; MONITOR, {trips['seconds']:g} s of an extra run)"
    )
    row.target = "≥ 0.50 x and ≤ 1 Redis round trip per request"
    row.met = bool(row.met) and trips["per_request"] <= 1.0
    bench.results.add(row)


def client_round_trips(
    bench: Bench, gateway: Gateway, redis_port: int, script: Path
) -> dict[str, Any]:
    """The commands the gateway sent Redis per request, from MONITOR during an extra run (not
    one of the measured ones: MONITOR costs Redis time). INFO commandstats cannot tell: it
    also counts the reads that the lookup script makes inside Redis."""
    seconds = 1.0
    duration = 3
    before = gateway.metrics()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sample = pool.submit(_sampled, gateway, redis_port, seconds)
        result = run_wrk(
            gateway.auth_url, [ORIGINAL_URI], duration, bench.options.connections, script
        )
        calls, decided = sample.result()
    if not result.clean or decided <= 0:
        raise InvalidRun(f"invalid run: the Redis sample run: {result.output}")
    if (gateway.metrics() - before).platform_calls():
        raise InvalidRun("invalid run: the Redis sample run asked the platform")
    total = sum(calls.values())
    text = ", ".join(f"{name} {n / decided:.2f}" for name, n in sorted(calls.items())) or "none"
    facts = {"calls": calls, "decided": decided, "per_request": total / decided, "text": text}
    bench.results.raw["l2_redis_sample"] = facts
    return {**facts, "seconds": seconds}


def _sampled(gateway: Gateway, redis_port: int, seconds: float) -> tuple[dict[str, int], int]:
    """MONITOR for ``seconds`` from 1 s into the run, and the requests decided meanwhile."""
    time.sleep(1.0)
    before = gateway.metrics()
    calls = redis_client_commands(redis_port, seconds)
    decided = int((gateway.metrics() - before).sum("paywall_requests_total"))
    return calls, decided


def nginx_plain(bench: Bench) -> None:
    """Row 5: the shipped paywall-auth.conf with the gateway, against the same file with an
    authz handler that always says 200."""
    options = bench.options
    platform = bench.simulator(0.0, options.l2_customers)
    _, customers = bench.seed(options.l2_customers)
    content = bench.content
    with bench.scope() as children:
        gateway = children.gateway(
            bench.config("nginx-gateway", platform=platform), log=bench.path("nginx-gateway.log")
        )
        # 200 without a body, as the gateway answers: nginx closes the upstream connection
        # after an auth subrequest whose answer has a body.
        stub = children.bare_app(log=bench.path("authz-stub.log"), empty=True)

        def site(auth: int) -> Callable[[int], str]:
            def make(port: int) -> str:
                return shipped_site(
                    PLAIN_CONFIG,
                    gateway_port=auth,
                    content_port=content,
                    port=port,
                    prefix=bench.path(f"nginx-plain-{auth}"),
                )

            return make

        with_gateway = nginx_in(
            children, bench.nginx, bench.path(f"nginx-plain-{gateway.port}"), site(gateway.port)
        )
        with_stub = nginx_in(
            children, bench.nginx, bench.path(f"nginx-plain-{stub.port}"), site(stub.port)
        )
        session = [f"{SESSION_HEADER}: {customers[0][1]}"]
        runs = interleave(
            bench,
            "nginx",
            [
                Target(
                    "nginx + stub",
                    with_stub.url + PREMIUM_URI,
                    session,
                    pids=[*with_stub.workers(), stub.pid],
                ),
                Target(
                    "nginx + gateway",
                    with_gateway.url + PREMIUM_URI,
                    session,
                    probe=GatewayProbe(gateway, connections=options.connections),
                    pids=[*with_gateway.workers(), gateway.pid],
                ),
            ],
        )
    bench.results.add(
        ratio_row(
            "5. nginx auth_request (paywall-auth.conf), gateway L1 hit",
            "nginx + gateway",
            runs["nginx + gateway"],
            "same nginx config, authz handler always 200",
            runs["nginx + stub"],
            0.85,
            "5. nginx auth_request",
        )
    )


def nginx_cached(bench: Bench) -> None:
    """Row 6 and the limits: paywall-auth-cached.conf, nginx proxying directly, nginx 204."""
    options = bench.options
    platform = bench.simulator(0.0, options.l2_customers)
    _, customers = bench.seed(options.l2_customers)
    content = bench.content
    with bench.scope() as children:
        gateway = children.gateway(
            bench.config("nginx-cached-gateway", platform=platform),
            log=bench.path("nginx-cached-gateway.log"),
        )
        cached_prefix = bench.path("nginx-cached")
        cached = nginx_in(
            children,
            bench.nginx,
            cached_prefix,
            lambda port: shipped_site(
                CACHED_CONFIG,
                gateway_port=gateway.port,
                content_port=content,
                port=port,
                prefix=cached_prefix,
            ),
        )
        direct_prefix = bench.path("nginx-direct")
        direct = nginx_in(
            children,
            bench.nginx,
            direct_prefix,
            lambda port: direct_site(content_port=content, port=port, prefix=direct_prefix),
        )
        empty_prefix = bench.path("nginx-204")
        empty = nginx_in(
            children,
            bench.nginx,
            empty_prefix,
            lambda port: status_204_site(port=port, prefix=empty_prefix),
        )
        session = [f"{SESSION_HEADER}: {customers[0][1]}"]
        runs = interleave(
            bench,
            "nginx-cached",
            [
                Target("nginx direct", direct.url + PREMIUM_URI, session, pids=direct.workers()),
                Target(
                    "nginx cached + gateway",
                    cached.url + PREMIUM_URI,
                    session,
                    probe=GatewayProbe(
                        gateway, connections=options.connections, behind_nginx_cache=True
                    ),
                    pids=[*cached.workers(), gateway.pid],
                ),
                Target("nginx 204", empty.url + PREMIUM_URI, session, pids=empty.workers()),
            ],
        )
    bench.results.add(
        ratio_row(
            "6. nginx auth_request with cached auth answers (paywall-auth-cached.conf)",
            "nginx cached + gateway",
            runs["nginx cached + gateway"],
            "nginx proxying directly to the content server",
            runs["nginx direct"],
            0.90,
            "6. nginx, cached auth",
        )
    )
    for label, scenario in (
        ("nginx 204", "limit: nginx returning 204 itself"),
        ("nginx direct", "limit: nginx proxying directly to the content server"),
    ):
        bench.results.add(Row(scenario=scenario, figure=rate_text(runs[label]), target="— (limit)"))
