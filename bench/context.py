"""What every scenario of bench/run.py gets: the options, a working directory, the servers
shared by several scenarios, a scope for its own servers, and the results to add rows to."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from common import free_port, start_redis, start_sandbox, write_config, write_customers
from report import Results
from servers import Children, Process, nginx_binary

ORIGINAL_URI = "X-Original-URI: /premium/article"


@dataclass(frozen=True)
class Options:
    duration: int  # seconds of each measured wrk / open-loop run
    rounds: int
    connections: int  # wrk's -c, the same for a scenario and its reference
    l2_customers: int
    spike: int  # concurrent cold requests
    zipf_requests: int
    zipf_customers: int
    zipf_concurrency: int
    hot_customers: int
    hot_rate: float  # requests a second of the hot-customers scenario (open loop)
    memory_customers: int


class Bench:
    """The shared state of one run. Servers started through :meth:`scope` stop when the
    scenario ends; :attr:`shared` ones (content server, simulators) at the end of the run."""

    def __init__(self, options: Options, workdir: Path, results: Results) -> None:
        self.options = options
        self.workdir = workdir
        self.results = results
        self.shared = Children()
        # req/s of the bare handler and of the gateway's cached decision (auth scenario)
        self.bare_max: float | None = None
        self.gateway_max: float | None = None
        self._seeds: dict[int, tuple[Path, list[tuple[str, str]]]] = {}
        self._simulators: dict[tuple[float, int], int] = {}
        self._content: int | None = None
        self._nginx: str | None = None
        self._started = time.monotonic()

    def log(self, message: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self._started), 60)
        print(f"[{minutes:2d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def scope(self) -> Iterator[Children]:
        children = Children()
        try:
            yield children
        finally:
            children.stop_all()

    def path(self, name: str) -> Path:
        return self.workdir / name

    def seed(self, count: int) -> tuple[Path, list[tuple[str, str]]]:
        """A simulator seed file of ``count`` bench customers and their (id, token) pairs."""
        if count not in self._seeds:
            path = self.path(f"customers-{count}.json")
            self._seeds[count] = (path, write_customers(path, count))
        return self._seeds[count]

    def simulator(self, latency: float, customers: int, children: Children | None = None) -> int:
        """The port of a simulator answering after ``latency`` seconds with ``customers``
        seeded customers: shared (kept for the run) unless ``children`` is given."""
        key = (latency, customers)
        if children is None and key in self._simulators:
            return self._simulators[key]
        data, _ = self.seed(customers)
        port = free_port()
        self.log(f"starting the simulator ({customers:,} customers, latency {latency * 1000:g} ms)")
        popen = start_sandbox(
            port,
            data,
            latency,
            log=self.path(f"simulator-{port}.log"),
            # Loading the seed takes about 0.3 s per 1,000 customers.
            timeout=30 + customers / 1000,
        )
        (children or self.shared).add(Process(popen))
        if children is None:
            self._simulators[key] = port
        return port

    def redis(self, children: Children) -> int:
        """A private redis-server (no persistence) for one scenario; its port."""
        port = free_port()
        workdir = self.path(f"redis-{port}")
        workdir.mkdir()
        children.add(Process(start_redis(port, workdir)))
        return port

    @property
    def content(self) -> int:
        """The content server (bench/bare_app.py: 200 "ok" for every path), shared."""
        if self._content is None:
            self._content = self.shared.bare_app(log=self.path("content.log")).port
        return self._content

    @property
    def nginx(self) -> str:
        if self._nginx is None:
            self._nginx = nginx_binary()
        return self._nginx

    def config(
        self,
        name: str,
        *,
        mode: str = "auth_request",
        platform: int,
        upstream: int = 9,
        access_log: bool = True,
        **sections: Mapping[str, object],
    ) -> Path:
        """A gateway config file: the premium route needs ``premium``, the rest is public;
        the access log on (the default) unless ``access_log`` is False."""
        path = self.path(f"{name}.toml")
        write_config(
            path,
            mode=mode,
            platform=platform,
            upstream=upstream,
            access_log=access_log,
            sections=sections,
        )
        return path

    def stop(self) -> None:
        self.shared.stop_all()
