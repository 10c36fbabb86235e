"""Every ``redis_url`` form against a real server: TCP, TLS, Unix socket, Sentinel, Cluster.

On each, the gateway's own pieces do everything the gateway does with Redis: GET, SET PX and
INCR (the shared tier, its generations and epoch), PUBLISH and a pub/sub subscription (the
invalidation bus, across two clients), SET NX PX and the compare-and-delete script (the
cross-process coalescer). The servers are private redis-server processes on free loopback
ports (or a socket in a temporary directory), started with bounded waits and always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError
from gateway.store.bus import CHANNEL
from gateway.store.coalesce import Found
from gateway.store.redis_connect import connect_redis, parse_redis_url
from gateway.store.redis_guard import RedisGuard
from tests.conftest import REPO_ROOT, free_port, require_binary
from tests.service.conftest import ManualClock
from tests.service.processes import Process, entry, eventually

PASSWORD = "s3cret/@:pw"  # needs percent-encoding in a URL
QUOTED = "s3cret%2F%40%3Apw"
STARTUP = 15.0  # seconds a server (or the whole cluster) may take to come up


# --- private servers ---------------------------------------------------------------------


@dataclass
class RedisServer:
    """One redis-server (or sentinel) process."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot terminate
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hanging Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def start_redis(
    workdir: Path,
    options: dict[str, object],
    ready: Callable[[], bool],
    *,
    what: str = "redis-server",
    port: int = 0,
    sentinel: Path | None = None,
) -> RedisServer:
    """A redis-server with ``options`` (``--name value``) in ``workdir``, once ``ready()``;
    with ``sentinel`` (a config file it may rewrite) a sentinel."""
    binary = require_binary("redis-server", "redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    defaults = {"bind": "127.0.0.1", "dir": workdir, "logfile": log}
    if sentinel is not None:
        command = [binary, str(sentinel), "--sentinel"]
    else:
        command = [binary, "--save", "", "--appendonly", "no"]
    for name, value in {**defaults, **options}.items():
        command += [f"--{name}", str(value)]
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    server = RedisServer(proc, log, port)
    deadline = time.monotonic() + STARTUP
    try:
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if ready():
                    return server
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start ({command}):\n{_tail(log)}", pytrace=False)
            time.sleep(0.05)
    except BaseException:
        server.stop()  # whatever went wrong, no server is left behind
        raise


def pings(**kwargs: Any) -> Callable[[], bool]:
    """A readiness check for ``start_redis``: a PING answered (loopback TCP by default)."""
    if "unix_socket_path" not in kwargs:
        kwargs.setdefault("host", "127.0.0.1")

    def ready() -> bool:
        client = redis.Redis(socket_timeout=0.5, socket_connect_timeout=0.5, **kwargs)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ready


@pytest.fixture(scope="module")
def unix_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A password-protected redis-server listening on a Unix socket only."""
    workdir = tmp_path_factory.mktemp("redis-unix")
    socket_path = workdir / "redis.sock"
    server = start_redis(
        workdir,
        {"port": 0, "unixsocket": socket_path, "unixsocketperm": 700, "requirepass": PASSWORD},
        pings(unix_socket_path=str(socket_path), password=PASSWORD),
    )
    try:
        yield f"unix://:{QUOTED}@{socket_path}?db=1"
    finally:
        server.stop()


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""

    cert: Path
    key: Path

    def server(self, port: int) -> dict[str, object]:
        """redis-server options: TLS on ``port``, no plain TCP."""
        return {
            "port": 0,
            "tls-port": port,
            "tls-cert-file": self.cert,
            "tls-key-file": self.key,
            "tls-ca-cert-file": self.cert,
            "tls-auth-clients": "no",
        }

    def client(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.cert)}


def listen(port: int, tls: Tls | None) -> dict[str, object]:
    return {"port": port} if tls is None else tls.server(port)


def client_options(tls: Tls | None) -> dict[str, Any]:
    return {} if tls is None else tls.client()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """Debian's redis-server is built with TLS: the TLS forms are tested for real."""
    openssl = require_binary("openssl", "openssl")
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "redis.pem", workdir / "redis.key"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    san = ("-addext", "subjectAltName=IP:127.0.0.1")
    subprocess.run(
        [openssl, *request.split(), *san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Tls(cert, key)


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[str]:
    """A redis-server speaking TLS only."""
    port = free_port()
    server = start_redis(
        tmp_path_factory.mktemp("redis-tls"),
        tls.server(port),
        pings(port=port, **tls.client()),
        what="redis-server with TLS",
    )
    try:
        yield f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={tls.cert}"
    finally:
        server.stop()


SENTINEL_PASSWORD = "sentinel-pw"


@contextlib.contextmanager
def running_sentinel(workdir: Path, tls: Tls | None) -> Iterator[str]:
    """A password-protected master watched by one sentinel (itself password-protected); the
    URL names a dead sentinel first, so the client must move on to the next."""
    master_port, sentinel_port = free_port(), free_port()
    secure = {} if tls is None else {"tls-replication": "yes"}  # sentinel -> master over TLS
    master = start_redis(
        workdir / "master",
        {**listen(master_port, tls), "requirepass": PASSWORD, "masterauth": PASSWORD},
        pings(port=master_port, password=PASSWORD, **client_options(tls)),
        port=master_port,
    )
    try:
        conf = workdir / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text(
            f"sentinel monitor gwmaster 127.0.0.1 {master_port} 1\n"
            f"sentinel auth-pass gwmaster {PASSWORD}\n"
            "sentinel down-after-milliseconds gwmaster 60000\n"
        )

        def master_known() -> bool:
            client = redis.Redis(
                host="127.0.0.1",
                port=sentinel_port,
                password=SENTINEL_PASSWORD,
                socket_timeout=0.5,
                **client_options(tls),
            )
            try:
                state: dict[str, Any] = client.sentinel_master("gwmaster")  # type: ignore[assignment]
            finally:
                client.close()
            return bool(state["flags"] == "master")  # not s_down, not disconnected

        sentinel = start_redis(
            workdir,
            {**listen(sentinel_port, tls), **secure, "requirepass": SENTINEL_PASSWORD},
            master_known,
            what="redis-server --sentinel",
            port=sentinel_port,
            sentinel=conf,
        )
        try:
            scheme = "redis+sentinel" if tls is None else "rediss+sentinel"
            options = f"sentinel_password={SENTINEL_PASSWORD}"
            if tls is not None:
                options += f"&ssl_ca_certs={tls.cert}"
            dead = free_port()
            yield (
                f"{scheme}://:{QUOTED}@127.0.0.1:{dead},127.0.0.1:{sentinel_port}"
                f"/gwmaster/3?{options}"
            )
        finally:
            sentinel.stop()
    finally:
        master.stop()


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_sentinel(tmp_path_factory.mktemp("redis-sentinel"), None) as url:
        yield url


@pytest.fixture(scope="module")
def tls_sentinel_url(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[str]:
    with running_sentinel(tmp_path_factory.mktemp("redis-sentinel-tls"), tls) as url:
        yield url


@pytest.fixture(params=["plain", "tls"])
def any_sentinel_url(request: pytest.FixtureRequest) -> str:
    """Both Sentinel forms (a sync fixture: servers start outside the test's event loop)."""
    url: str = request.getfixturevalue(
        "sentinel_url" if request.param == "plain" else "tls_sentinel_url"
    )
    return url


@contextlib.contextmanager
def running_cluster(workdir: Path, tls: Tls | None) -> Iterator[str]:
    """Three primaries (no replicas) made into one cluster by ``redis-cli --cluster create``;
    with ``tls`` the nodes speak TLS to clients and to each other."""
    cli = require_binary("redis-cli", "redis-tools")
    nodes: list[RedisServer] = []
    secure = {} if tls is None else {"tls-cluster": "yes"}
    try:
        for index in range(3):
            port, bus = free_port(), free_port()
            options = {
                **listen(port, tls),
                **secure,
                "cluster-enabled": "yes",
                "cluster-port": bus,
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": 5000,
            }
            nodes.append(
                start_redis(
                    workdir / f"node{index}",
                    options,
                    pings(port=port, **client_options(tls)),
                    what="a cluster node",
                    port=port,
                )
            )
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        tls_args = [] if tls is None else ["--tls", "--cacert", str(tls.cert)]
        create = [*tls_args, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        created = subprocess.run(
            [cli, *create, "--cluster-yes"],
            capture_output=True,
            timeout=STARTUP,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout!r}", pytrace=False)
        deadline = time.monotonic() + STARTUP
        for node in nodes:
            while not _cluster_ok(node.port, tls):
                if time.monotonic() > deadline:
                    pytest.fail("the cluster did not reach cluster_state:ok", pytrace=False)
                time.sleep(0.05)
        seeds = ",".join(addresses[:2])  # the third is discovered
        if tls is None:
            yield f"redis+cluster://{seeds}"
        else:
            yield f"rediss+cluster://{seeds}?ssl_ca_certs={tls.cert}"
    finally:
        for node in nodes:
            node.stop()


def _cluster_ok(port: int, tls: Tls | None) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, **client_options(tls))
    try:
        info = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and "cluster_known_nodes:3" in text


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_cluster(tmp_path_factory.mktemp("redis-cluster"), None) as url:
        yield url


@pytest.fixture(scope="module")
def tls_cluster_url(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[str]:
    with running_cluster(tmp_path_factory.mktemp("redis-cluster-tls"), tls) as url:
        yield url


@pytest.fixture(params=["plain", "tls"])
def any_cluster_url(request: pytest.FixtureRequest) -> str:
    """Both Cluster forms (a sync fixture: servers start outside the test's event loop)."""
    url: str = request.getfixturevalue(
        "cluster_url" if request.param == "plain" else "tls_cluster_url"
    )
    return url


# --- what the gateway does with Redis, on every form -------------------------------------


async def exercise(url: str) -> None:
    clock, errors = ManualClock(), list[str]()
    a, b = Process(url, clock, errors, timeout=5.0), Process(url, clock, errors, timeout=5.0)
    try:
        await asyncio.wait_for(b.bus.connected.wait(), 5)
        # GET and SET PX: one process stores, the other finds it (and keeps it in its L1).
        await a.cache.set("c1:premium", entry("granted"), customer_id="c1")
        found = await b.cache.get("c1:premium", customer_id="c1")
        assert found is not None, errors
        assert (found.value, found.tier) == ("granted", "l2")

        # INCR (a new generation) and PUBLISH: the other process's L1 forgets it.
        await a.cache.invalidate_customer("c1")

        async def gone_from_b() -> bool:
            return await b.l1.get("c1:premium", customer_id="c1") is None

        await eventually(gone_from_b)
        assert await b.cache.get("c1:premium", customer_id="c1") is None

        # INCR of the epoch, and "*" on the bus: everything is gone everywhere.
        await a.cache.set("public", entry("p"))
        assert await b.cache.get("public") is not None
        await a.cache.invalidate_all()

        async def all_gone() -> bool:
            return await b.l1.get("public") is None

        await eventually(all_gone)
        assert await b.cache.get("public") is None

        # SET NX PX, then the compare-and-delete script: b waits for a's answer.
        holding, release = asyncio.Event(), asyncio.Event()
        answer: list[str] = []

        async def slow_fetch() -> str:
            holding.set()
            await release.wait()
            answer.append("from a")
            return "from a"

        polled = asyncio.Event()

        async def stored() -> Found[str] | None:
            polled.set()  # only a process that found the marker polls for the answer
            return Found(answer[0]) if answer else None

        async def b_fetch() -> str:
            return "b had to fetch"

        holder = asyncio.create_task(a.coalescer.run("k1", slow_fetch, stored))
        await holding.wait()
        assert 0 < await a.client.pttl("pwg:v1:lock:k1") <= 5000
        waiter = asyncio.create_task(b.coalescer.run("k1", b_fetch, stored))
        # b is waiting for a's answer (a fixed pause may end before b's SET NX on a loaded
        # machine, and b would then take the released marker and fetch itself).
        await asyncio.wait_for(polled.wait(), 5)
        release.set()
        assert await holder == "from a"
        assert await waiter == "from a"
        assert await a.client.exists("pwg:v1:lock:k1") == 0  # released by the script
        assert errors == []
    finally:
        await a.stop()
        await b.stop()


async def test_redis_tcp(redis_url: str) -> None:
    await exercise(redis_url)


async def test_rediss_tls(tls_url: str) -> None:
    client = connect_redis(tls_url, connect_timeout=2.0)
    try:
        assert client.connection_pool.connection_class is SSLConnection
    finally:
        await client.aclose()
    await exercise(tls_url)


async def test_unix_socket(unix_url: str) -> None:
    client = connect_redis(unix_url, connect_timeout=2.0)
    try:
        assert client.connection_pool.connection_class is UnixDomainSocketConnection
        assert await client.ping()  # the password was sent
    finally:
        await client.aclose()
    await exercise(unix_url)


async def test_sentinel(any_sentinel_url: str) -> None:
    url = any_sentinel_url
    client = connect_redis(url, connect_timeout=2.0)
    try:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        tls = url.startswith("rediss")
        assert (pool.connection_class is SentinelManagedSSLConnection) is tls
        await client.set("where", "master")
        info = await client.info("replication")
        assert info["role"] == "master"
        assert (await client.client_info())["db"] == 3
        for sentinel in pool.sentinel_manager.sentinels:  # asked over TLS too
            assert (sentinel.connection_pool.connection_class is SSLConnection) is tls
    finally:
        await client.aclose()
    await exercise(url)


async def test_closing_a_sentinel_client_closes_its_sentinel_connections(
    sentinel_url: str,
) -> None:
    client = connect_redis(sentinel_url, connect_timeout=2.0)
    await client.ping()
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    sentinels = client.connection_pool.sentinel_manager.sentinels
    assert any(s.connection_pool._available_connections for s in sentinels)
    await client.aclose()
    for sentinel in sentinels:
        assert not any(c.is_connected for c in sentinel.connection_pool._available_connections)


async def test_a_hanging_sentinel_costs_one_discovery_not_every_operation(
    sentinel_url: str,
) -> None:
    """Operations give up after a fraction of a second; the master is still found behind a
    sentinel that accepts connections and never answers (2 s per question), and then every
    operation succeeds."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    hanging = server.sockets[0].getsockname()[1]
    live = sentinel_url.split(",", 1)[1]
    client = connect_redis(
        f"redis+sentinel://:{QUOTED}@127.0.0.1:{hanging},{live}", connect_timeout=2.0
    )
    errors: list[str] = []
    # Long enough for a real GET on a loaded machine, far shorter than the discovery's wait.
    guard = RedisGuard(timeout=0.25, on_error=errors.append, failures=0)
    loop = asyncio.get_running_loop()

    async def bounded_get() -> bool:
        started = loop.time()
        ok, _ = await guard.call("get", client.get("k"))
        # Bounded by the guard, even while the discovery waits 2 s for the hanging sentinel.
        assert loop.time() - started < 1.0
        return ok

    try:
        deadline = loop.time() + 10
        while not await bounded_get():
            assert loop.time() < deadline, "the master was never found"
            await asyncio.sleep(0.02)
        assert errors  # the first operations gave up...
        assert accepted  # ...while the hanging sentinel was asked
        for _ in range(20):
            assert await bounded_get()
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_cluster(any_cluster_url: str) -> None:
    url = any_cluster_url
    client = connect_redis(url, connect_timeout=2.0)
    try:
        assert isinstance(client, RedisCluster)
        tls = url.startswith("rediss")
        assert (client.connection_kwargs.get("connection_class") is SSLConnection) is tls
        await client.ping()
        assert len(client.get_primaries()) == 3  # the third node was discovered
        # The gateway's keys spread over the nodes: every operation is routed per key.
        slots = {client.keyslot(f"pwg:v1:access:0:c{i}") for i in range(20)}
        owners = {client.nodes_manager.get_node_from_slot(slot).name for slot in slots}
        assert len(owners) > 1
    finally:
        await client.aclose()
    await exercise(url)


async def test_cluster_pubsub_hears_a_publish_on_any_node(cluster_url: str) -> None:
    """The bus subscribes on one node; classic pub/sub is cluster-wide, so it does not matter
    which node redis-py sends the gateway's PUBLISH to."""
    errors: list[str] = []
    listener = Process(cluster_url, ManualClock(), errors, timeout=5.0)
    publisher = connect_redis(cluster_url, connect_timeout=2.0)
    assert isinstance(publisher, RedisCluster)
    try:
        await asyncio.wait_for(listener.bus.connected.wait(), 5)
        await publisher.ping()
        primaries = publisher.get_primaries()
        assert len(primaries) == 3
        for index, node in enumerate(primaries):
            customer = f"c{index}"
            await listener.l1.set(f"{customer}:x", entry(1), customer_id=customer)
            await publisher.execute_command("PUBLISH", CHANNEL, customer, target_nodes=node)

            async def heard(customer: str = customer) -> bool:
                return await listener.l1.get(f"{customer}:x", customer_id=customer) is None

            await eventually(heard)
        assert errors == []
    finally:
        await publisher.aclose()
        await listener.stop()


def test_hiredis_parses_replies_when_installed() -> None:
    """The ``speed`` extra installs hiredis; redis-py then picks its parser by itself."""
    from redis._parsers import _AsyncHiredisParser
    from redis.asyncio.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE, "install the speed extra: pip install -e '.[speed]'"
    assert DefaultParser is _AsyncHiredisParser


# --- URL checks, and what a misconfiguration looks like ---------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "db", "tls"),
    [
        pytest.param("redis://cache", "server", [("cache", 6379)], 0, False, id="redis"),
        pytest.param("rediss://:pw@cache:6380/4", "server", [("cache", 6380)], 4, True, id="tls"),
        pytest.param("unix:///run/redis.sock?db=2", "unix", [], 2, False, id="unix"),
        pytest.param(
            "redis+sentinel://s1,s2:26380/mymaster/1",
            "sentinel",
            [("s1", 26379), ("s2", 26380)],
            1,
            False,
            id="sentinel",
        ),
        pytest.param(
            "rediss+cluster://[::1]:7000,r2",
            "cluster",
            [("::1", 7000), ("r2", 6379)],
            0,
            True,
            id="cluster-ipv6",
        ),
    ],
)
def test_url_forms(url: str, kind: str, nodes: list[tuple[str, int]], db: int, tls: bool) -> None:
    target = parse_redis_url(url)
    assert (target.kind, list(target.nodes), target.db, target.tls) == (kind, nodes, db, tls)


def test_credentials_are_percent_decoded() -> None:
    target = parse_redis_url(f"redis+sentinel://user:{QUOTED}@s1/m?sentinel_password=x")
    assert (target.username, target.password, target.service) == ("user", PASSWORD, "m")
    assert target.options == {"sentinel_password": "x"}
    assert PASSWORD not in repr(target)
    assert parse_redis_url("redis://:p@ss@cache").password == "p@ss"  # the last "@" ends it


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("http://cache:6379", r"is not a redis://, rediss://, unix://", id="scheme"),
        pytest.param("redis+sentinel://s1:26379", r"needs the service name", id="no-service"),
        pytest.param("redis+cluster://n1/2", r"only database 0", id="cluster-db"),
        pytest.param("redis://a,b", r"names one server", id="two-servers"),
        pytest.param("redis://h/x", r"'x' is not a database number", id="bad-db"),
        pytest.param("redis://h:0x/0", r"'h:0x' is not host\[:port\]", id="bad-port"),
        pytest.param("redis://h?sockettimeout=1", r"unknown option 'sockettimeout'", id="typo"),
        pytest.param("redis://h?ssl_cert_reqs=none", r"a TLS option", id="tls-option-no-tls"),
        pytest.param("redis://h?socket_timeout=-1", r"must be seconds > 0", id="bad-seconds"),
        pytest.param("rediss://h?ssl_ca_certs=/no/such.pem", r"readable file", id="no-ca"),
        pytest.param("redis://pw@h", r"':password@'", id="password-without-colon"),
        pytest.param("unix://", r"absolute path", id="unix-no-path"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_key(tmp_path: Path, url: str, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[cache]\nredis_url = '{url}'\n")
    with pytest.raises(ConfigError, match=r"cache\.redis_url: .*" + message):
        load_settings(path)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://:hunter2@cache:6379", id="scheme"),
        pytest.param("redis://hunter2@cache", id="no-colon"),
        pytest.param("redis+sentinel://s1/m?sentinel_password=hunter2&x=1", id="option"),
        pytest.param("redis://:hun/ter2@cache", id="unencoded-slash"),
        pytest.param("redis://:hunter2#@cache", id="unencoded-hash"),
        pytest.param("redis+cluster://:hunter2?@a,b", id="unencoded-question-mark"),
    ],
)
def test_messages_never_show_a_password(tmp_path: Path, url: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[cache]\nredis_url = '{url}'\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert "hunter2" not in str(raised.value)


def test_the_environment_can_set_a_cluster_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWALL_CACHE__REDIS_URL", "redis+cluster://n1:7000,n2:7001")
    assert Settings().cache.redis_url == "redis+cluster://n1:7000,n2:7001"


def test_the_example_documents_every_form() -> None:
    example = (REPO_ROOT / "config" / "gateway.example.toml").read_text()
    for scheme in ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://"):
        assert f"#     {scheme}" in example, scheme
    # Every concrete example is a URL the gateway accepts (certificate files aside).
    examples = re.findall(r"^#     (\S+://[^\s\[]+)$", example, flags=re.MULTILINE)
    assert len(examples) >= 5
    for url in examples:
        parse_redis_url(url.split("?ssl_")[0])
