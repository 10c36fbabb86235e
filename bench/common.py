"""Helpers the benchmarks share: free ports, child processes, wrk, configs, seed data, metrics.

The scripts in bench/ are run as ``.venv/bin/python bench/<name>.py`` (so this module is
importable as ``common``). Everything listens on 127.0.0.1 and every child process is stopped
by the script that started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_SERVER = "/usr/bin/redis-server"
PREMIUM_URI = "/premium/article"
SESSION_HEADER = "X-plenigo-customer-session"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


def start(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child process in the repository root; its stderr goes to ``log`` (or nowhere)."""
    stderr: IO[bytes] | int = subprocess.DEVNULL
    if log is not None:
        stderr = log.open("ab")
    try:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT)
    finally:
        if log is not None and not isinstance(stderr, int):
            stderr.close()  # the child holds its own copy


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def load_note() -> str:
    """The 1-minute load average and the CPU count: the benchmarks share the machine with
    whatever else runs on it, and say so next to their numbers."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    busy = " (busy machine: numbers are noisy)" if load > 0.5 * cpus else ""
    return f"load average {load:.2f} on {cpus} CPUs{busy}"


def require_wrk() -> bool:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return False
    return True


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def wrk_ms(text: str) -> float:
    """A wrk duration ("850.00us", "2.22ms", "1.02s") in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: what it counted and its latency distribution (milliseconds)."""

    url: str
    rate: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx_3xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: str  # wrk's "Socket errors: ..." line, "" when there were none
    output: str

    @property
    def clean(self) -> bool:
        """Every answer 2xx/3xx, no socket error, and something was answered at all."""
        return self.requests > 0 and self.non_2xx_3xx == 0 and not self.socket_errors

    @property
    def detail(self) -> str:
        return f"p50 {self.p50_ms:.2f}ms, p99 {self.p99_ms:.2f}ms"

    def summary(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "requests": self.requests,
            "seconds": self.seconds,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "non_2xx_3xx": self.non_2xx_3xx,
            "socket_errors": self.socket_errors,
        }


def run_wrk(
    url: str,
    headers: Iterable[str],
    duration: int,
    connections: int,
    script: Path | None = None,
) -> WrkResult:
    """One wrk run with one thread (-t1) and --latency; never raises for bad answers (see
    :attr:`WrkResult.clean`), only when wrk itself fails or prints no result."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run(
        [*command, url], capture_output=True, text=True, check=False, timeout=duration + 30
    )
    out = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    # The "Latency Distribution" lines ("     50%    1.64ms"), not a "+/- Stdev" column.
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.MULTILINE))
    if result.returncode != 0 or rate is None or count is None or len(latency) < 3:
        raise RuntimeError(f"wrk against {url} failed:\n{out}{result.stderr}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return WrkResult(
        url=url,
        rate=float(rate.group(1)),
        requests=int(count.group(1)),
        seconds=wrk_ms(count.group(2) + count.group(3)) / 1000,
        p50_ms=wrk_ms(latency["50"]),
        p90_ms=wrk_ms(latency["90"]),
        p99_ms=wrk_ms(latency["99"]),
        non_2xx_3xx=int(errors.group(1)) if errors else 0,
        socket_errors=socket_errors.group(1).strip() if socket_errors else "",
        output=out,
    )


def wrk(
    url: str,
    headers: list[str],
    duration: int,
    connections: int,
    script: Path | None = None,
) -> tuple[float, str]:
    """(requests per second, "p50 …, p99 …") of one wrk run; raises if any answer was not
    2xx/3xx or wrk saw socket errors."""
    result = run_wrk(url, headers, duration, connections, script)
    if not result.clean:
        raise RuntimeError(f"wrk against {url} failed:\n{result.output}")
    return result.rate, result.detail


def gateway_config(path: Path, mode: str, platform: int, upstream: int, access_log: bool) -> None:
    """The config of bench/cached_decision.py: premium route, everything else public."""
    write_config(path, mode=mode, platform=platform, upstream=upstream, access_log=access_log)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(
    path: Path,
    *,
    mode: str,
    platform: int,
    upstream: int = 9,
    access_log: bool = False,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """A gateway config: ``/premium/**`` needs the ``premium`` access right, the rest is
    public; ``sections`` adds keys (e.g. ``{"cache": {"redis_url": …}}``)."""
    extra = ""
    for section, values in (sections or {}).items():
        extra += f"[{section}]\n"
        extra += "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())
    path.write_text(
        f"""
[platform]
base_url = "http://127.0.0.1:{platform}/api/v3.0"
[server]
mode = "{mode}"
upstream = "http://127.0.0.1:{upstream}/"
cookie_secure = false
[logging]
access_log = {str(access_log).lower()}
{extra}
[[routes]]
path = "/premium/**"
access_rights = ["premium"]
[[routes]]
path = "/**"
public = true
""",
        encoding="utf-8",
    )


def customer_token(n: int) -> tuple[str, str]:
    """(customer id, session token) of bench customer ``n`` (0-based)."""
    return str(200_001 + n), f"bench-session-{n:06d}"


def write_customers(path: Path, count: int) -> list[tuple[str, str]]:
    """A simulator seed file (gateway/sandbox/data.py) with ``count`` customers, each with
    one session token and an unlimited ``premium`` subscription; returns (id, token) pairs."""
    customers = [customer_token(n) for n in range(count)]
    document = {
        "_comment": f"bench: {count} customers, each a session and a premium access right",
        "customers": [
            {
                "customerId": customer_id,
                "sessions": [{"token": token}],
                "accessRights": [
                    {
                        "accessRightUniqueId": "premium",
                        "itemId": f"9{n:06d}",
                        "productId": "P_BENCH_PREMIUM",
                        "lifeTimeStart": "-30d",
                    }
                ],
            }
            for n, (customer_id, token) in enumerate(customers)
        ],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return customers


def start_sandbox(
    port: int, data: Path, latency: float = 0.0, log: Path | None = None, timeout: float = 20.0
) -> subprocess.Popen[bytes]:
    """The simulator with seed file ``data``; it loads a large file for a while (100,000
    customers: about 30 s), so ``timeout`` must allow for that. Stopped again if it does not
    answer in time."""
    process = start(
        [
            sys.executable,
            "-m",
            "gateway",
            "sandbox",
            "--port",
            str(port),
            "--data",
            str(data),
            "--latency",
            str(latency),
        ],
        log=log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v3.0/", timeout=timeout)
    except RuntimeError:
        stop(process)
        raise
    return process


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A private, non-persistent redis-server on 127.0.0.1:``port``."""
    if not Path(REDIS_SERVER).exists():
        raise RuntimeError(f"{REDIS_SERVER} is missing (apt-get install redis-server)")
    process = start(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        log=workdir / "redis.log",
    )
    deadline = time.monotonic() + 10
    while redis_command(port, "PING") != "+PONG":
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return process


def redis_command(port: int, *words: str) -> str:
    """One inline command to Redis; its first reply line ("" if it cannot connect)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            return sock.makefile("rb").readline().decode().strip()
    except OSError:
        return ""


def redis_stats(port: int) -> dict[str, int]:
    """Redis's ``total_commands_processed`` and ``total_connections_received`` (INFO stats),
    less this query's own connection and command, so two readings differ by others' only."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"INFO stats\r\n")
        reply = sock.makefile("rb")
        size = int(reply.readline()[1:])  # a bulk string: $<length>
        text = reply.read(size).decode()
    stats = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        "commands": int(stats["total_commands_processed"]),
        "connections": int(stats["total_connections_received"]),
    }


def redis_commandstats(port: int) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats), e.g. {"mget": 1200}. The
    INFO commands of these readings are counted too; :func:`redis_commands_between` leaves them
    out."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        reply = sock.makefile("rb")
        size = int(reply.readline()[1:])
        text = reply.read(size).decode().replace("\r", "")
    calls: dict[str, int] = {}
    for name, fields in re.findall(r"^cmdstat_(\S+?):(\S+)$", text, re.MULTILINE):
        values = dict(field.split("=", 1) for field in fields.split(","))
        calls[name] = int(values["calls"])
    return calls


def redis_commands_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The commands others sent between two :func:`redis_commandstats` readings (INFO left
    out), by command."""
    delta = {
        name: after.get(name, 0) - before.get(name, 0) for name in after.keys() | before.keys()
    }
    return {name: n for name, n in sorted(delta.items()) if n and name != "info"}


def redis_client_commands(port: int, seconds: float) -> dict[str, int]:
    """The commands clients sent to Redis during ``seconds`` (MONITOR), by command: each one is
    a round trip or part of one. Commands a script runs inside Redis (MONITOR shows them as
    from ``lua``) are not, and INFO is left out; INFO commandstats counts both alike."""
    calls: dict[str, int] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"MONITOR\r\n")
        reply = sock.makefile("rb")
        if reply.readline().strip() != b"+OK":
            raise RuntimeError("MONITOR refused")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                line = reply.readline()
            except TimeoutError:
                break
            if not line:
                break
            match = re.match(rb'\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if match is None or match.group(1) == b"lua":
                continue
            name = match.group(2).decode().lower()
            if name not in ("info", "monitor"):
                calls[name] = calls.get(name, 0) + 1
    return calls


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS from /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: ``[0]`` is field 3 of stat(5),
    the state. OSError when there is no such process (or no /proc)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far, all its threads, its children
    not included (Linux /proc; 0 elsewhere or once it is gone)."""
    try:
        fields = proc_stat(pid)
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15 of stat(5)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rotating_script(path: Path, tokens: list[str]) -> Path:
    """A wrk Lua script that sends request n with session token ``tokens[n % len]`` in
    X-plenigo-customer-session (other headers as given with -H). One wrk thread (-t1) walks the
    list in order, so with more tokens than the gateway's L1 holds every lookup misses L1."""
    token_file = path.with_suffix(".tokens")
    token_file.write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    path.write_text(
        f"""
local tokens = {{}}
for line in io.lines({json.dumps(str(token_file))}) do tokens[#tokens + 1] = line end
local n = 0
request = function()
  n = n % #tokens + 1
  wrk.headers["{SESSION_HEADER}"] = tokens[n]
  return wrk.format()
end
""",
        encoding="utf-8",
    )
    return path


def breaker_openings(log: Path) -> int:
    """How often a gateway logged that its Redis breaker opened (or re-opened)."""
    if not log.exists():
        return 0
    return log.read_text(encoding="utf-8", errors="replace").count("not asking it")


class Gateway:
    """One ``python -m gateway serve`` process on free ports."""

    def __init__(
        self,
        config: Path,
        log: Path | None = None,
        *,
        wrapper: tuple[str, ...] = (),
        start_timeout: float = 20.0,
    ) -> None:
        """``wrapper``: a command the gateway runs under (valgrind), which may make it start
        slowly (``start_timeout``) and stop slowly (:meth:`stop` waits 4 times as long)."""
        self.port, self.admin = free_port(), free_port()
        self._stop_timeout = 15.0 if not wrapper else 4 * start_timeout
        self.process = start(
            [
                *wrapper,
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin),
            ],
            log=log,
        )
        try:
            wait_http(f"http://127.0.0.1:{self.admin}/healthz", timeout=start_timeout)
        except RuntimeError:
            self.stop()
            raise

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_paywall/auth"

    def metrics(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as reply:
            return Samples.parse(reply.read().decode())

    def readyz(self) -> dict[str, object]:
        """The admin /readyz body (it answers 503 too: that is a body as well)."""
        url = f"http://127.0.0.1:{self.admin}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        try:
            found = json.loads(body)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (see :func:`cpu_seconds`)."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop(self.process, self._stop_timeout)


class Samples:
    """Prometheus samples of one /metrics scrape (or a sum or difference of scrapes)."""

    def __init__(self, values: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        self.values = values

    @classmethod
    def parse(cls, text: str) -> Samples:
        values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(values)

    @classmethod
    def total(cls, scrapes: Iterable[Samples]) -> Samples:
        values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for scrape in scrapes:
            for key, value in scrape.values.items():
                values[key] = values.get(key, 0.0) + value
        return cls(values)

    def __sub__(self, before: Samples) -> Samples:
        keys = self.values.keys() | before.values.keys()
        return Samples(
            {key: self.values.get(key, 0.0) - before.values.get(key, 0.0) for key in keys}
        )

    def sum(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in self.values.items()
            if sample == name and wanted <= sample_labels
        )

    def platform_calls(self, endpoint: str | None = None) -> int:
        if endpoint is None:
            return int(self.sum("paywall_platform_requests_total"))
        return int(self.sum("paywall_platform_requests_total", endpoint=endpoint))

    def lookups(self, cache: str, tier: str, result: str) -> int:
        return int(self.sum("paywall_cache_lookups_total", cache=cache, tier=tier, result=result))


async def drive_auth(
    gateways: list[Gateway],
    sequence: list[int],
    customers: list[tuple[str, str]],
    concurrency: int,
) -> Counter[str]:
    """``GET /_paywall/auth`` for the premium page as customer ``customers[n]`` for every n in
    ``sequence`` (request i to ``gateways[i % len(gateways)]``), at most ``concurrency`` at a
    time. Anything but 200, granted, for that customer is counted, by kind."""
    failures: Counter[str] = Counter()
    pending = iter(enumerate(sequence))
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def worker() -> None:
            for i, n in pending:  # the shared iterator hands each request to one worker
                customer_id, token = customers[n]
                headers = {"X-Original-URI": PREMIUM_URI, SESSION_HEADER: token}
                try:
                    async with http.get(gateways[i % len(gateways)].auth_url, headers=headers) as r:
                        await r.read()
                        access = r.headers.get("X-Paywall-Access")
                        who = r.headers.get("X-Paywall-Customer-Id")
                        if r.status != 200 or access != "granted" or who != customer_id:
                            whose = "right" if who == customer_id else "wrong"
                            failures[f"{r.status} {access} {whose} customer"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def zipf_sequence(customers: int, requests: int, exponent: float, seed: int) -> list[int]:
    """Customer indexes (0 = rank 1) of ``requests`` independent Zipf(``exponent``) draws."""
    weights = [1.0 / (rank**exponent) for rank in range(1, customers + 1)]
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    return rng.choices(range(customers), weights=weights, k=requests)


def simulator_calls(port: int) -> int | None:
    """The simulator's count of answered API requests (GET /_sandbox/calls, "total"), if this
    simulator has that counter; None otherwise. Only a cross-check of the gateways' metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/calls", timeout=5) as r:
            total = json.load(r).get("total")
    except (OSError, ValueError, AttributeError):
        return None
    return total if isinstance(total, int) else None
