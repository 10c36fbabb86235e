"""The Redis client for ``[cache] redis_url``: one server, a Sentinel-managed master, a Cluster.

URL forms (how to configure each is documented in ``config/gateway.example.toml``)::

    redis://[[user]:password@]host[:6379][/db][?option=value&...]     one server, TCP
    rediss://...                                                      the same over TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=0&...]          one server, Unix socket
    redis+sentinel://[[user]:password@]host[:26379][,host[:26379]...]/service[/db][?...]
    rediss+sentinel://...                                             TLS to sentinels and servers
    redis+cluster://[[user]:password@]host[:6379][,host[:6379]...][?...]
    rediss+cluster://...                                              TLS to every node

The credentials are those of the Redis servers (for Sentinel: the master's; the sentinels' own,
if they require any, are the ``sentinel_username`` / ``sentinel_password`` options). Options
are a fixed list (:data:`OPTIONS`), so a misspelt one fails at startup rather than at the first
connection. :func:`parse_redis_url` checks a URL (the config validator calls it; messages never
repeat a password); :func:`connect_redis` builds the client. Nothing connects before the first
command, so a Redis that is down at startup costs only errors counted by the guard.

hiredis (the ``speed`` extra) is picked up by redis-py by itself when installed (>= 3.2).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

Kind = Literal["server", "unix", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"server": 6379, "sentinel": 26379, "cluster": 6379}
SCHEMES = ", ".join(f"{scheme}://" for scheme in _SCHEMES)


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:  # also NaN
        raise ValueError
    return value


def _boolean(raw: str) -> bool:
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    return words[raw.lower()]


def _database(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError
    return value


def _cert_reqs(raw: str) -> str:
    if raw not in ("required", "optional", "none"):
        raise ValueError
    return raw


def _readable_file(raw: str) -> str:
    if not os.access(raw, os.R_OK) or not os.path.isfile(raw):
        raise ValueError
    return raw


_Parser = Callable[[str], object]
_COMMON: dict[str, tuple[_Parser, str]] = {
    "socket_timeout": (_seconds, "seconds > 0"),
    "socket_connect_timeout": (_seconds, "seconds > 0"),
    "socket_keepalive": (_boolean, "true or false"),
    "health_check_interval": (_seconds, "seconds > 0"),
    "client_name": (str, "a name"),
}
_DATABASE: dict[str, tuple[_Parser, str]] = {"db": (_database, "a database number >= 0")}
_TLS: dict[str, tuple[_Parser, str]] = {
    "ssl_ca_certs": (_readable_file, "a readable file (PEM)"),
    "ssl_certfile": (_readable_file, "a readable file (PEM)"),
    "ssl_keyfile": (_readable_file, "a readable file (PEM)"),
    "ssl_cert_reqs": (_cert_reqs, "required, optional or none"),
    "ssl_check_hostname": (_boolean, "true or false"),
}
_SENTINEL: dict[str, tuple[_Parser, str]] = {
    "sentinel_username": (str, "a user name"),
    "sentinel_password": (str, "a password"),
}
#: The query options each form accepts.
OPTIONS: dict[tuple[Kind, bool], dict[str, tuple[_Parser, str]]] = {
    ("server", False): {**_COMMON, **_DATABASE},
    ("server", True): {**_COMMON, **_DATABASE, **_TLS},
    ("unix", False): {**_COMMON, **_DATABASE},
    ("sentinel", False): {**_COMMON, **_DATABASE, **_SENTINEL},
    ("sentinel", True): {**_COMMON, **_DATABASE, **_SENTINEL, **_TLS},
    ("cluster", False): dict(_COMMON),
    ("cluster", True): {**_COMMON, **_TLS},
}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a ``redis_url`` says: where Redis is and how to talk to it."""

    kind: Kind
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # the server, the sentinels or the startup nodes
    path: str | None = None  # the Unix socket
    service: str | None = None  # the Sentinel service name
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, object] = field(default_factory=dict, repr=False)


def redact(url: str) -> str:
    """``url`` without its secrets (the password before the host, and password options)."""
    url = re.sub(r"^([^:/?#]*://).*@", r"\1***@", url)  # up to the last "@": all of it
    return re.sub(r"(password=)[^&#]*", r"\1***", url)


def parse_redis_url(url: str) -> RedisTarget:
    """The :class:`RedisTarget` of ``url``; ValueError (saying what is wrong, without the
    password) for anything :func:`connect_redis` could not use."""
    scheme, found, rest = url.partition("://")
    form = _SCHEMES.get(scheme.lower()) if found else None
    if form is None:
        raise ValueError(f"{redact(url)!r} is not a {SCHEMES} URL")
    kind, tls = form
    try:
        parts = urlsplit(f"{scheme.lower()}://{rest}")
    except ValueError as exc:
        raise ValueError(f"{scheme}:// URL cannot be read ({exc})") from None
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # A password with an unencoded "/", "?" or "#": it spills into what follows.
        raise ValueError(
            f"{scheme}:// URL: percent-encode '/', '?', '#' and '@' in the password "
            "(%2F, %3F, %23, %40)"
        )
    if parts.fragment:
        raise ValueError(f"{scheme}:// URL: remove the '#' part")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo, scheme) if userinfo else (None, None)
    options = _options(parts.query, OPTIONS[form], scheme)
    query_db = cast("int | None", options.pop("db", None))
    db = query_db or 0
    path = unquote(parts.path)
    if kind == "unix":
        if hosts:
            raise ValueError(f"unix:// URL: no host ({hosts!r}) before the socket path")
        if not path.startswith("/") or path == "/":
            raise ValueError("unix:// URL needs the socket's absolute path: unix:///run/redis.sock")
        return RedisTarget(kind, tls, (), path, None, db, username, password, options)
    nodes = _nodes(hosts, kind, scheme)
    service = None
    segments = [segment for segment in path.split("/") if segment]
    if kind == "sentinel":
        if not segments:
            raise ValueError(
                f"{scheme}:// URL needs the service name after the sentinels: "
                f"{scheme}://host:26379/mymaster"
            )
        service, segments = segments[0], segments[1:]
    if len(segments) > 1:
        raise ValueError(f"{scheme}:// URL: unexpected path {parts.path!r}")
    if segments:
        if query_db is not None:
            raise ValueError(f"{scheme}:// URL gives the database twice (path and ?db=)")
        try:
            db = _database(segments[0])
        except ValueError:
            raise ValueError(f"{scheme}:// URL: {segments[0]!r} is not a database number") from None
    if kind == "cluster" and db != 0:
        raise ValueError(f"{scheme}:// URL: a Redis Cluster has only database 0")
    if kind == "server" and len(nodes) > 1:
        raise ValueError(
            f"{scheme}:// URL names one server; for several use {scheme}+sentinel:// "
            f"or {scheme}+cluster://"
        )
    return RedisTarget(kind, tls, nodes, None, service, db, username, password, options)


def _credentials(userinfo: str, scheme: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        raise ValueError(
            f"{scheme}:// URL: write the password as ':password@' (or 'user:password@') "
            "before the host"
        )
    return unquote(user) or None, unquote(password) or None


def _options(
    query: str, known: Mapping[str, tuple[_Parser, str]], scheme: str
) -> dict[str, object]:
    options: dict[str, object] = {}
    for name, raw in parse_qsl(query, keep_blank_values=True):
        if name in options:
            raise ValueError(f"{scheme}:// URL: option {name!r} given twice")
        if name not in known:
            extra = " (a TLS option: use a rediss scheme)" if name in _TLS else ""
            raise ValueError(
                f"{scheme}:// URL: unknown option {name!r}{extra}; "
                f"known: {', '.join(sorted(known))}"
            )
        parse, expected = known[name]
        try:
            options[name] = parse(raw)
        except (ValueError, KeyError):
            shown = "***" if "password" in name else repr(raw)
            raise ValueError(f"{scheme}:// URL: option {name}={shown} must be {expected}") from None
    return options


def _nodes(hosts: str, kind: Kind, scheme: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise ValueError(f"{scheme}:// URL needs a host")
    nodes = []
    for host in hosts.split(","):
        try:
            parsed = urlsplit(f"//{host}")
            name, port = parsed.hostname, parsed.port
        except ValueError:
            name = None
        if not name:
            raise ValueError(f"{scheme}:// URL: {host!r} is not host[:port]")
        nodes.append((name, port or _DEFAULT_PORT[kind]))
    return tuple(nodes)


class _SentinelPool(SentinelConnectionPool):
    """Asks the sentinels for the master in a task of its own that every new connection
    shares: an operation that gives up (the guard's timeout is milliseconds) leaves the
    discovery running, so a sentinel that is slow or unreachable costs one discovery (which
    then puts the sentinel that answered first in line), not every operation from then on."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._discovery: asyncio.Task[Any] | None = None

    async def get_master_address(self) -> Any:
        if self._discovery is None or self._discovery.done():
            discover = super().get_master_address()  # type: ignore[no-untyped-call]
            self._discovery = asyncio.create_task(discover)
            # Seen by whoever is still waiting; nobody may be, once they have all given up.
            self._discovery.add_done_callback(_retrieve)
        return await asyncio.shield(self._discovery)

    def stop_discovery(self) -> None:
        if self._discovery is not None:
            self._discovery.cancel()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _SentinelMaster(redis.Redis):
    """The master of a Sentinel-monitored service; closing it also closes the connections to
    the sentinels (which redis-py leaves to whoever made the :class:`Sentinel`)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        try:
            if isinstance(pool, _SentinelPool):
                pool.stop_discovery()
            await super().aclose(close_connection_pool)
        finally:
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


class _ClusterPubSub(ClusterPubSub):
    """redis-py picks a subscription's node from the cluster's slot map, which only exists
    once the client has initialized: a subscription made before any other command (the
    invalidation bus starts first) initializes it."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.connection is None and self.connection_pool is None:
            await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


class _Cluster(RedisCluster):
    def pubsub(
        self,
        node: ClusterNode | None = None,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


def connect_redis(url: str, *, connect_timeout: float) -> redis.Redis:
    """The client for ``url`` (see the module for the forms). ``connect_timeout`` bounds
    every connection attempt unless the URL sets ``socket_connect_timeout`` (and every question
    to a sentinel, unless it sets ``socket_timeout``).

    A Cluster client is a :class:`redis.asyncio.cluster.RedisCluster`, typed here as
    :class:`redis.asyncio.Redis`: it has every command the gateway uses (GET, SET, INCR,
    PUBLISH, pub/sub, scripts), each on single keys, so no operation crosses slots
    (tests/service/test_redis_connect.py runs them all against a real cluster).
    """
    target = parse_redis_url(url)
    kwargs: dict[str, Any] = {"socket_connect_timeout": connect_timeout, **target.options}
    kwargs["username"] = target.username
    kwargs["password"] = target.password
    if target.kind == "unix":
        return redis.Redis(unix_socket_path=target.path, db=target.db, **kwargs)
    if target.kind == "server":
        ((host, port),) = target.nodes
        return redis.Redis(host=host, port=port, db=target.db, ssl=target.tls, **kwargs)
    if target.kind == "sentinel":
        assert target.service is not None  # parse_redis_url requires it
        sentinel_kwargs: dict[str, Any] = {
            name: value for name, value in kwargs.items() if name.startswith(("socket_", "ssl_"))
        }
        sentinel_kwargs["username"] = kwargs.pop("sentinel_username", None)
        sentinel_kwargs["password"] = kwargs.pop("sentinel_password", None)
        sentinel_kwargs["ssl"] = target.tls
        # No retries with back-off: a sentinel that refuses is skipped at once for the next;
        # one that hangs is given up after the connect timeout (answers are tiny).
        sentinel_kwargs["retry"] = Retry(NoBackoff(), 0)
        sentinel_kwargs.setdefault("socket_timeout", kwargs["socket_connect_timeout"])
        # Called untyped: older redis-py releases leave Sentinel's constructor unannotated (an
        # untyped call for mypy --strict), newer ones (8.2) annotate it; an ignore comment
        # fails one or the other. master_for makes a _SentinelMaster.
        sentinel_class: Any = Sentinel
        sentinel = sentinel_class(
            list(target.nodes), sentinel_kwargs=sentinel_kwargs, ssl=target.tls, **kwargs
        )
        master: redis.Redis = sentinel.master_for(
            target.service,
            redis_class=_SentinelMaster,
            connection_pool_class=_SentinelPool,
            db=target.db,
        )
        return master
    cluster = _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        ssl=target.tls,
        **kwargs,
    )
    return cast(redis.Redis, cluster)
