"""An L2-only hit in one round trip: the session's lookup reads the access answer that follows it
(gateway/store/redis_chain.py, the companion of gateway/store/layered.py), and every rule
of two separate lookups still holds: invalidations (in flight, in Redis not yet heard of, of
every kind), unreadable entries, a flushed script, Redis down or hanging, a Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as redis
from hypothesis import given
from hypothesis import strategies as st

from gateway.access import (
    Verdict,
)
from gateway.store.cache import CacheEntry, sessions_scope
from gateway.store.codec import EntryCodec
from gateway.store.layered import Companion, LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_cache import RedisCache
from gateway.store.redis_chain import (
    SCRIPT,
    ChainAnswer,
    ChainLookup,
    ChainReader,
    chain_reader,
    encode_lookup,
    evalsha_command,
)
from gateway.store.redis_connect import connect_redis
from gateway.store.redis_guard import RedisGuard
from tests.conftest import free_port
from tests.service.conftest import (
    NO_RIGHTS,
    PLAIN,
    ManualClock,
    PlainValues,
    StartService,
)
from tests.service.processes import eventually
from tests.service.scripts import ScriptHooks, hooked_client
from tests.service.test_redis_connect import cluster_url  # noqa: F401 (a fixture)
from tests.service.test_redis_generations import (
    ACCESS,
    CONNECTION_COMMANDS,
    CUSTOMER,
    SESSION,
    Node,
    StartNode,
    entry,
    warm,
)


@pytest.fixture
async def start_node(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[StartNode]:
    """``await start_node(client=None)``: a gateway process's Redis tier (see Node), its bus
    subscribed; on an emptied database."""
    started: list[Node] = []

    async def start(*, client: Any = None) -> Node:
        node = Node(redis_url, ManualClock(), client=cast(redis.Redis | None, client))
        started.append(node)
        await asyncio.wait_for(node.bus.connected.wait(), 5)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.stop()


# --- what reaches Redis ------------------------------------------------------------------------


class Trips(list[str]):
    """The names of the commands, in order; ``commands``: each one in full."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[list[str]] = []


@contextlib.asynccontextmanager
async def round_trips(url: str) -> AsyncIterator[Trips]:
    """The commands clients send Redis inside the block, in order (MONITOR): not what a script
    runs inside Redis, nor what a (re)connecting client or subscription sends."""
    client = redis.from_url(url)
    seen = Trips()
    marker = f"end-{secrets.token_hex(8)}"
    try:
        async with client.monitor() as monitor:
            yield seen
            await client.echo(marker)
            while True:
                command = await asyncio.wait_for(monitor.next_command(), 5)
                words = command["command"].split()
                if marker in words:
                    break
                name = words[0].lower() if words else ""
                if command["client_type"] != "lua" and name not in CONNECTION_COMMANDS:
                    seen.append(name)
                    seen.commands.append(words)
    finally:
        await client.aclose()


async def ready(node: Node) -> None:
    """The node has read the epoch and Redis knows the script (a process's first lookups see to
    both, once): lookups cost only their own reads."""
    await node.epoch.current()
    await node.client.script_load(SCRIPT)


async def assert_chained_hit(node: Node, tier: str = "l2") -> None:
    session, access = await node.chained_lookup()
    assert session is not None
    assert access is not None
    assert (session.value, access.value) == (CUSTOMER, "granted")
    assert (session.tier, access.tier) == (tier, tier)


# --- (1) one round trip ------------------------------------------------------------------------


async def test_an_l2_only_hit_is_one_round_trip(start_node: StartNode, redis_url: str) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await b.lookup()  # b keeps the three records now
    await b.forget_l1()

    async with round_trips(redis_url) as two:
        await b.lookup()  # unannounced, the lookups go one after the other
    assert two == ["get", "get"]
    for _ in range(3):
        await b.forget_l1()
        async with round_trips(redis_url) as seen:
            await assert_chained_hit(b)
        assert seen == ["evalsha"]
    # Copied into L1 like any L2 hit: the next lookup asks nobody.
    async with round_trips(redis_url) as none:
        await assert_chained_hit(b, tier="l1")
    assert none == []
    assert a.errors == b.errors == []


async def test_chained_lookups_of_one_tick_are_one_evalsha(
    start_node: StartNode, redis_url: str
) -> None:
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    await ready(b)
    sessions = {f"session:{i:064x}": f"c{i}" for i in range(20)}
    for session, customer in sessions.items():
        owned = entry(clock, customer, owner=sessions_scope(customer))
        await a.sessions.set(session, owned, customer_id=session)
        granted = entry(clock, f"{customer}!")
        await a.access.set(f"{customer}:premium", granted, customer_id=customer)
    rejected, unknown, no_access = "session:rejected", "session:unknown", "session:no-access"
    await a.sessions.set(rejected, entry(clock, None), customer_id=rejected)
    stranger = entry(clock, "c99", owner=sessions_scope("c99"))
    await a.sessions.set(no_access, stranger, customer_id=no_access)
    keys = [*sessions, rejected, unknown, no_access]

    async with round_trips(redis_url) as seen:
        found = await asyncio.gather(*(b.chained_lookup(key) for key in keys))
    assert seen == ["evalsha"]
    values = [(s.value if s else None, x.value if x else None) for s, x in found]
    expected = [(c, f"{c}!") for c in sessions.values()]
    assert values == [*expected, (None, None), (None, None), ("c99", None)]
    assert found[-3][0] is not None  # the rejected session was found: its value is None
    assert b.chain is not None
    assert b.chain.batches == 1
    assert a.errors == b.errors == []


async def test_lookups_that_join_one_read_share_what_it_brought(
    start_node: StartNode, redis_url: str
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await b.lookup()  # b keeps the records: a plain lookup is one GET
    await b.forget_l1()
    async with round_trips(redis_url) as same:
        both = await asyncio.gather(b.chained_lookup(), b.chained_lookup())
    assert same == ["evalsha"]  # one flight for the session key, its answer for both
    assert all(s is not None and x is not None and x.value == "granted" for s, x in both)
    await b.forget_l1()
    # Another rule's lookup joining the read gets no answer from it: it asks on its own.
    async with round_trips(redis_url) as other:
        first, second = await asyncio.gather(b.chained_lookup(), b.chained_lookup(SESSION, ":x"))
    assert other == ["evalsha", "get"]
    assert first[1] is not None
    assert second[0] is not None
    assert second[1] is None


# --- (2) invalidations --------------------------------------------------------------------------


Invalidate = Callable[[Node, Node], Awaitable[None]]
# What is invalidated, by this process or another one; and which of (session, access) a lookup
# afterwards must miss.
INVALIDATIONS = [
    pytest.param(
        lambda here, there: there.access.invalidate_customer(CUSTOMER), (False, True), id="customer"
    ),
    pytest.param(
        lambda here, there: there.sessions.invalidate_customer(SESSION), (True, False), id="session"
    ),
    pytest.param(
        lambda here, there: there.sessions.invalidate_customer(sessions_scope(CUSTOMER)),
        (True, False),
        id="sessions-of-customer",
    ),
    pytest.param(lambda here, there: there.access.invalidate_all(), (True, True), id="everything"),
    pytest.param(
        lambda here, there: here.access.invalidate_customer(CUSTOMER),
        (False, True),
        id="customer-by-this-process",
    ),
    pytest.param(
        lambda here, there: here.sessions.invalidate_customer(sessions_scope(CUSTOMER)),
        (True, False),
        id="sessions-of-customer-by-this-process",
    ),
]


@pytest.mark.parametrize(("invalidate", "missed"), INVALIDATIONS)
async def test_a_chained_read_racing_an_invalidation_never_lands_in_l1(
    start_node: StartNode,
    redis_url: str,
    invalidate: Invalidate,
    missed: tuple[bool, bool],
) -> None:
    clock = ManualClock()
    a = await start_node()
    held = ScriptHooks(held=True)
    b = await start_node(client=hooked_client(redis_url, held))
    await warm(a, clock)
    await ready(b)
    lookup = asyncio.create_task(b.chained_lookup())
    await held.answered.wait()  # Redis answered with both entries; the answer waits
    before = b.access_l2.changes
    await invalidate(b, a)

    async def heard() -> bool:
        return b.access_l2.changes > before

    await eventually(heard, within=2.0)
    held.release.set()
    session, access = await lookup
    # Concurrent with the invalidation: the lookup may use what it read ...
    assert session is not None
    assert access is not None
    # ... but nothing it read is kept in L1 ...
    assert await b.session_l1.get(SESSION, customer_id=SESSION) is None
    assert await b.access_l1.get(ACCESS, customer_id=CUSTOMER) is None
    # ... and the next lookups honour the invalidation, chained or not.
    session, access = await b.chained_lookup()
    if missed[0]:
        assert session is None
    else:
        assert session is not None
        assert (access is None) == missed[1]
    session, access = await b.lookup()
    assert (session is None, access is None) == missed
    assert a.errors == b.errors == []


async def test_the_script_reads_the_generations_redis_holds_now(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """Records changed in Redis before this process heard of it (its message still on the way):
    a plain lookup trusts the copies it keeps until the bus delivers, a chained one does not
    need to, and an entry whose owner's generation moved is a miss."""
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    await warm(a, clock)
    await assert_chained_hit(b)  # b keeps no records of its own for the chain, only for get
    await b.forget_l1()
    await b.lookup()  # (and now holds copies of the three records, as a plain lookup does)
    assert len(b.generations) == 3

    async def changed_unheard(key: str) -> None:
        generation = await redis_client.incr("pwg:v1:gen-counter")
        await redis_client.set(key, generation)  # written, never published

    await changed_unheard(b.access_l2.generation_key(CUSTOMER))
    await b.forget_l1()
    plain_session, plain_access = await b.lookup()
    assert plain_session is not None
    assert plain_access is not None  # the copy of the customer's record, not yet corrected
    await b.forget_l1()
    session, access = await b.chained_lookup()
    assert session is not None
    assert access is None  # the customer's new generation, read inside Redis

    await warm(a, clock)  # stored under the customer's new generation again
    await changed_unheard(b.session_l2.generation_key(sessions_scope(CUSTOMER)))
    await b.forget_l1()
    session, access = await b.chained_lookup()
    assert session is None  # its owner (sessions-of:<customer>) moved: a miss
    assert access is None  # and the access answer was not read for it


# --- (3) what Redis holds may be unreadable -----------------------------------------------------


GARBAGE = [
    pytest.param(b"garbage", id="not-json"),
    pytest.param(b"[2, 0, 0, null]", id="another-format"),
    pytest.param(b'[1, "x", 0, "100001"]', id="json-the-script-reads-but-the-codec-refuses"),
    pytest.param(b'{"a": 1}', id="an-object"),
    pytest.param(b'[1, 0, 0, "100001", null]', id="owner-null"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("raw", GARBAGE)
async def test_garbage_in_the_session_entry_is_a_miss(
    start_node: StartNode, redis_client: redis.Redis, redis_url: str, raw: bytes
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await redis_client.set(f"pwg:v1:session:0:{SESSION}@0", raw)
    async with round_trips(redis_url) as seen:
        session, access = await b.chained_lookup()
    assert (session, access) == (None, None)
    assert seen == ["evalsha"]
    assert len(b.session_l1) == 0
    assert await b.access.get(ACCESS, customer_id=CUSTOMER) is not None  # its own read


@pytest.mark.parametrize("raw", GARBAGE)
async def test_garbage_in_the_access_entry_is_a_miss(
    start_node: StartNode, redis_client: redis.Redis, redis_url: str, raw: bytes
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await redis_client.set(f"pwg:v1:access:0:{ACCESS}@0", raw)
    async with round_trips(redis_url) as seen:
        session, access = await b.chained_lookup()
    assert session is not None
    assert access is None  # what get answers for it, without asking again
    assert seen == ["evalsha"]
    assert len(b.access_l1) == 0
    assert await b.access.get(ACCESS, customer_id=CUSTOMER) is None


async def test_a_key_holding_another_type_reads_as_absent(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await redis_client.delete(f"pwg:v1:access:0:{ACCESS}@0")
    await redis_client.hset(f"pwg:v1:access:0:{ACCESS}@0", "x", "y")
    session, access = await b.chained_lookup()
    assert session is not None
    assert access is None
    assert b.errors == []


async def test_generations_beyond_a_double_are_compared_exactly(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    # The script sees numbers as doubles, 2**53 and 2**53 + 1 as one: it may read the access
    # answer, but the session's entry is only found if the owner's generation is exactly its.
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    await warm(a, clock)
    owner_record = b.session_l2.generation_key(sessions_scope(CUSTOMER))
    owned = entry(clock, CUSTOMER, owner=sessions_scope(CUSTOMER))
    stored = EntryCodec(PlainValues()).encode(owned, 2**53 + 1)
    await redis_client.set(f"pwg:v1:session:0:{SESSION}@0", stored)
    await redis_client.set(owner_record, 2**53)
    assert await b.chained_lookup() == (None, None)
    await redis_client.set(owner_record, 2**53 + 1)
    session, access = await b.chained_lookup()
    assert session is not None
    assert access is not None


# --- (4) the script, and Redis failing ----------------------------------------------------------


async def test_a_flushed_script_is_loaded_again(
    start_node: StartNode, redis_client: redis.Redis, redis_url: str
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await assert_chained_hit(b)
    await redis_client.script_flush()
    await b.forget_l1()
    async with round_trips(redis_url) as seen:
        await assert_chained_hit(b)
    assert seen == ["evalsha", "script", "evalsha"]  # NOSCRIPT, SCRIPT LOAD, again
    await b.forget_l1()
    async with round_trips(redis_url) as again:
        await assert_chained_hit(b)
    assert again == ["evalsha"]
    assert a.errors == b.errors == []


async def test_a_batch_that_meets_noscript_loads_the_script_once_and_fails_nothing(
    start_node: StartNode, redis_client: redis.Redis, redis_url: str
) -> None:
    """Redis lost its scripts (a Sentinel failover to a fresh replica, a restart, SCRIPT
    FLUSH) while this process kept its reader: the batch of lookups that meets NOSCRIPT loads
    the script once and runs again, every lookup answers what it answered before, and nothing
    counts as a Redis failure."""
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    sessions = {f"session:{i:064x}": f"c{i}" for i in range(12)}
    for session, customer in sessions.items():
        owned = entry(clock, customer, owner=sessions_scope(customer))
        await a.sessions.set(session, owned, customer_id=session)
        granted = entry(clock, f"{customer}!")
        await a.access.set(f"{customer}:premium", granted, customer_id=customer)
    expected = [(customer, f"{customer}!", "l2", "l2") for customer in sessions.values()]
    assert b.chain is not None

    async def lookups() -> list[tuple[object, object, str, str]]:
        await b.forget_l1()  # every lookup goes to Redis
        found = await asyncio.gather(*(b.chained_lookup(key) for key in sessions))
        return [(s.value, x.value, s.tier, x.tier) if s and x else (s, x, "", "") for s, x in found]

    assert await lookups() == expected  # (the script loaded here if Redis did not know it)
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    assert await redis_client.script_exists(sha) == [True]
    await redis_client.script_flush()
    assert await redis_client.script_exists(sha) == [False]
    batches = b.chain.batches
    async with round_trips(redis_url) as seen:
        assert await lookups() == expected
    assert seen == ["evalsha", "script", "evalsha"], seen.commands  # NOSCRIPT, loaded, again
    assert [word.lower() for word in seen.commands[1][:2]] == ["script", "load"]
    assert b.chain.batches == batches + 1  # all twelve lookups in that one batch
    assert await redis_client.script_exists(sha) == [True]
    async with round_trips(redis_url) as again:
        assert await lookups() == expected
    assert again == ["evalsha"]  # known again: no more loading
    # Nothing failed: no Redis error counted, the Redis breaker closed and never skipping.
    assert a.errors == b.errors == []
    assert (b.guard.state, b.guard.is_open, b.guard.skipped) == ("ok", False, 0)


async def connections_received(client: redis.Redis) -> int:
    stats = await client.info("stats")
    return int(stats["total_connections_received"])


async def test_batch_after_batch_the_reader_opens_no_connection(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """The script goes out on a connection the reader keeps: batch after batch, Redis sees no
    new connection (the client's own commands would take one from the pool and give it back:
    the reader's stays out of it)."""
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await b.forget_l1()
    await assert_chained_hit(b)
    assert b.chain is not None
    before, batches = await connections_received(redis_client), b.chain.batches
    for _ in range(5):
        await b.forget_l1()
        await assert_chained_hit(b)
    assert b.chain.batches == batches + 5
    assert await connections_received(redis_client) == before
    assert a.errors == b.errors == []


async def test_a_kept_connection_that_redis_closed_is_tried_once_more(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """Redis closed the connection the reader kept (a restart, an idle timeout, CLIENT KILL):
    the next batch meets the closed connection, connects again and asks once more; nothing
    fails and nothing is counted."""
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())
    await ready(b)
    await b.forget_l1()
    await assert_chained_hit(b)
    killed = await redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1  # the reader's, and whichever others the nodes had open
    before = await connections_received(redis_client)
    await b.forget_l1()
    await assert_chained_hit(b)
    assert await connections_received(redis_client) > before  # it connected again
    assert a.errors == b.errors == []
    assert (b.guard.state, b.guard.is_open) == ("ok", False)


async def test_a_kept_connection_reset_while_answering_is_tried_once_more() -> None:
    """The connection the reader kept is reset after Redis read the batch (what the reader
    meets is the operating system's error, not redis-py's): it is a lost connection like any
    other, so the batch is asked once more on a new one and nothing fails. A stand-in Redis
    on loopback (a real one cannot be made to reset mid-answer) answers every command, and
    resets its first connection at its second EVALSHA."""
    evalshas = 0
    connections = 0
    nothing = b"*1\r\n*5\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n"  # one lookup, no entry

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal evalshas, connections
        connections += 1
        first = connections == 1
        try:
            while True:
                head = await reader.readline()  # *<n>
                if not head:
                    return
                words = []
                for _ in range(int(head[1:])):
                    size = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(size + 2))[:-2])
                if words[0].upper() == b"EVALSHA":
                    evalshas += 1
                    if first and evalshas == 2:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()  # an RST, not an orderly close
                        return
                    writer.write(nothing)
                elif words[0].upper() == b"HELLO":  # the connection's set-up
                    proto = int(words[1]) if len(words) > 1 else 2
                    writer.write(b"%%1\r\n$5\r\nproto\r\n:%d\r\n" % proto)
                else:
                    writer.write(b"+OK\r\n")  # the rest of the set-up
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0)
    try:
        reader = ChainReader(client, timeout=2.0)
        lookup = ChainLookup("p:", "r:", "s", "s", "tp:", "tr:", ":x")
        assert await reader.read(lookup) == ChainAnswer(None)
        assert await reader.read(lookup) == ChainAnswer(None)  # reset, then asked again
        assert (evalshas, connections) == (3, 2)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_closing_the_client_closes_the_connections_the_reader_kept(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The kept connections stay the pool's (taken with ``get_connection``): closing the
    client closes them too, and nothing is left open in Redis."""
    name = f"chain-{secrets.token_hex(4)}"
    client = connect_redis(f"{redis_url}?client_name={name}", connect_timeout=2.0)
    errors: list[str] = []
    sessions, access = chained_caches(
        client, ManualClock(), RedisGuard(timeout=2.0, on_error=errors.append)
    )
    for cache in (sessions, access):
        await cache._l2.epoch.current()
    keys = [f"session:{i:064x}" for i in range(3)]
    await asyncio.gather(
        *(sessions.get_chained(k, customer_id=k, then=companion(access)) for k in keys)
    )
    assert chains[-1].batches == 1
    assert errors == []

    async def open_connections() -> int:
        listed = await redis_client.client_list()
        return sum(1 for entry in listed if entry.get("name") == name)

    assert await open_connections() >= 1
    await client.aclose()

    async def all_closed() -> bool:
        return await open_connections() == 0

    await eventually(all_closed, within=2.0)


def chained_caches(
    client: redis.Redis, clock: ManualClock, guard: RedisGuard
) -> tuple[LayeredCache[Any], LayeredCache[Any]]:
    chain = chain_reader(client)
    assert chain is not None
    chains.append(chain)

    def layered(namespace: str) -> LayeredCache[Any]:
        l2: RedisCache[Any] = RedisCache(
            client, namespace, EntryCodec(PlainValues()), clock, chain=chain
        )
        return LayeredCache(MemoryCache(100, clock), l2, guard=guard)

    return layered("session"), layered("access")


chains: list[ChainReader] = []  # the last one chained_caches made


async def chained(
    sessions: LayeredCache[Any], access: LayeredCache[Any]
) -> tuple[CacheEntry[Any] | None, CacheEntry[Any] | None]:
    then = access.companion(":premium")
    assert then is not None
    session = await sessions.get_chained(SESSION, customer_id=SESSION, then=then)
    return session, await then.get(ACCESS, customer_id=CUSTOMER)


async def test_redis_down_is_a_counted_miss_as_before() -> None:
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    errors: list[str] = []
    guard = RedisGuard(timeout=0.5, on_error=errors.append, failures=4, open_seconds=60)
    sessions, access = chained_caches(client, ManualClock(), guard)
    try:
        assert await chained(sessions, access) == (None, None)
        # The follow-up asks on its own, as it did before: two failures, as before.
        assert errors == ["get", "get"]
        assert await chained(sessions, access) == (None, None)
        assert errors == ["get"] * 4
        assert guard.is_open
        assert await chained(sessions, access) == (None, None)  # the breaker: nobody asked
        assert errors == ["get"] * 4
        assert guard.skipped == 2
    finally:
        await client.aclose()


async def test_a_redis_that_hangs_is_bounded_by_the_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis.from_url(f"redis://127.0.0.1:{port}/0")
    errors: list[str] = []
    sessions, access = chained_caches(
        client, ManualClock(), RedisGuard(timeout=0.05, on_error=errors.append)
    )
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await chained(sessions, access) == (None, None)
        assert loop.time() - started < 1.0  # timeouts of 0.05 s, headroom for a loaded machine
        assert errors == ["get", "get"]
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
        await client.aclose()


async def test_an_error_reaches_every_lookup_of_the_batch(redis_url: str) -> None:
    hooks = ScriptHooks(fail=True)
    client = hooked_client(redis_url, hooks)
    errors: list[str] = []
    sessions, access = chained_caches(
        client, ManualClock(), RedisGuard(timeout=1.0, on_error=errors.append, failures=0)
    )
    try:
        for cache in (sessions, access):
            await cache._l2.epoch.current()  # known, as in a process that has been running
        keys = [f"session:{i:064x}" for i in range(3)]
        found = await asyncio.gather(
            *(sessions.get_chained(k, customer_id=k, then=companion(access)) for k in keys)
        )
        assert found == [None] * 3
        assert hooks.failed == 1  # one script call for the three ...
        assert errors == ["get"] * 3  # ... and each lookup's own read failed, and was counted
        assert chains[-1].batches == 1
    finally:
        await client.aclose()


def companion(access: LayeredCache[Any]) -> Companion[Any]:
    then = access.companion(":premium")
    assert then is not None
    return then


# --- (5) a Cluster keeps two reads --------------------------------------------------------------


async def test_on_a_cluster_lookups_keep_their_two_reads(cluster_url: str) -> None:  # noqa: F811
    client = connect_redis(cluster_url, connect_timeout=2.0)
    clock, errors = ManualClock(), list[str]()
    try:
        assert chain_reader(client) is None
        guard = RedisGuard(timeout=5.0, on_error=errors.append)

        def layered(namespace: str) -> LayeredCache[Any]:
            l2: RedisCache[Any] = RedisCache(
                client, namespace, EntryCodec(PlainValues()), clock, chain=None
            )
            return LayeredCache(MemoryCache(100, clock), l2, guard=guard)

        sessions, access = layered("session"), layered("access")
        assert access.companion(":premium") is None  # nothing to announce: the service won't
        owned = entry(clock, CUSTOMER, owner=sessions_scope(CUSTOMER))
        await sessions.set(SESSION, owned, customer_id=SESSION)
        await access.set(ACCESS, entry(clock, "granted"), customer_id=CUSTOMER)
        other_sessions, other_access = layered("session"), layered("access")
        # Announced anyway: the session cache reads as get does, the follow-up on its own.
        then = Companion(other_access, ":premium")
        session = await other_sessions.get_chained(SESSION, customer_id=SESSION, then=then)
        found = await then.get(ACCESS, customer_id=CUSTOMER)
        assert session is not None
        assert found is not None
        assert (session.value, found.value, found.tier) == (CUSTOMER, "granted", "l2")
        assert errors == []
    finally:
        await client.aclose()


async def test_a_chain_reader_needs_one_server() -> None:
    client = redis.Redis()  # nothing connects before the first command
    try:
        assert isinstance(chain_reader(client), ChainReader)
    finally:
        await client.aclose()


# --- (6) the access service: what a request costs, and counts ----------------------------------


async def test_a_request_answered_by_redis_alone_is_one_round_trip(
    start_service: StartService, redis_url: str, redis_client: redis.Redis
) -> None:
    # (No refresh-ahead: the denial's short life would start one, a round trip of its own.)
    first = await start_service(refresh_ahead=0)
    for session in (PLAIN, NO_RIGHTS):
        await first.check(session)  # the platform answers; stored in Redis
    second = await start_service(refresh_ahead=0)
    await redis_client.script_load(SCRIPT)
    async with round_trips(redis_url) as cold:
        granted = await second.check(PLAIN)
    assert cold == ["get", "evalsha"]  # the epoch, once per process; then the request
    async with round_trips(redis_url) as seen:
        denied = await second.check(NO_RIGHTS)
    assert seen == ["evalsha"], seen.commands
    assert (granted.verdict, granted.cache) == (Verdict.GRANTED, "hit")
    assert (denied.verdict, denied.cache) == (Verdict.DENIED, "hit")
    # Counted as before: an L2 hit of each cache per request, and no platform call.
    assert second.lookups() == {("session", "l2", "hit"): 2, ("access", "l2", "hit"): 2}
    assert second.platform_calls() == 0
    # Copied into L1 as before: the next request asks nobody.
    async with round_trips(redis_url) as none:
        again = await second.check(PLAIN)
    assert none == []
    assert again.cache == "hit"
    assert second.lookups()[("access", "l1", "hit")] == 1


async def test_an_answer_read_before_a_platform_call_is_read_again_after_it(
    start_service: StartService, redis_url: str
) -> None:
    # The session's entry needs the platform (no longer fresh): the access answer that came
    # with it is from before that call, and is read again (in a process without an invalidation
    # bus, nothing else would tell it of an invalidation meanwhile).
    first = await start_service(session_ttl=30)
    await first.check(PLAIN)
    second = await start_service(session_ttl=30)
    clock = second.service._clock
    assert isinstance(clock, ManualClock)
    clock.advance(31)  # the session's validation is stale, the access answer (60 s) fresh
    async with round_trips(redis_url) as seen:
        outcome = await second.check(PLAIN)
    assert outcome.verdict is Verdict.GRANTED
    assert seen[0 if seen[0] == "evalsha" else 1] == "evalsha"
    access_reads = [
        words
        for words in seen.commands
        if words[0].lower() == "get" and words[1].startswith("pwg:v1:access:0:100001:")
    ]
    assert len(access_reads) == 1  # after the validation, its own read
    assert second.lookups()[("access", "l2", "hit")] == 1
    assert second.lookups()[("session", "l2", "miss")] == 1


@pytest.mark.parametrize("record", ["pwg:v1:access:gen:100001", "pwg:v1:epoch"])
async def test_a_record_that_is_no_integer_is_a_counted_failure_not_an_error(
    start_service: StartService, redis_client: redis.Redis, record: str
) -> None:
    # Someone else's data (or a corruption) where a generation or the epoch belongs: the
    # shared tier failed, as if Redis were down (counted, a miss), and the platform answers.
    await redis_client.set(record, b"not-a-number")
    try:
        service = await start_service(refresh_ahead=0)
        outcome = await service.check(PLAIN)
    finally:
        await redis_client.delete(record)  # the server is shared with later tests
    assert outcome.verdict is Verdict.GRANTED
    assert service.platform_calls() >= 1
    errors = sum(
        service.metrics.value("paywall_redis_errors_total", {"operation": operation})
        for operation in ("get", "set", "generation")
    )
    assert errors >= 1


async def test_a_flushed_script_costs_a_request_nothing_and_counts_no_redis_failure(
    start_service: StartService, redis_url: str, redis_client: redis.Redis
) -> None:
    """Requests answered by Redis alone, before and after Redis lost its scripts (a failover
    to a fresh replica, a restart, SCRIPT FLUSH): the same verdicts from the same tier, the
    script loaded again once, no Redis error or skip counted, the Redis breaker closed."""
    sessions = [PLAIN, NO_RIGHTS, "demo-session-paused", "demo-session-blocked-item"]
    first = await start_service(refresh_ahead=0)
    expected = [(await first.check(session)).verdict for session in sessions]
    assert Verdict.GRANTED in expected
    assert Verdict.DENIED in expected
    # A generous Redis timeout: the reload is three round trips in one guarded lookup, under
    # MONITOR, and on a busy machine (the whole suite) they once took longer than the default
    # 0.1 s, so the lookups fell back to plain reads. A stalled Redis has tests of its own.
    second = await start_service(refresh_ahead=0, redis_timeout=2.0)

    async def checks() -> list[tuple[Verdict, str | None]]:
        await second.forget_l1()  # every request is an L2-only hit
        outcomes = await asyncio.gather(*(second.check(session) for session in sessions))
        return [(outcome.verdict, outcome.cache) for outcome in outcomes]

    hits = [(verdict, "hit") for verdict in expected]
    assert await checks() == hits
    await redis_client.script_flush()
    async with round_trips(redis_url) as seen:
        assert await checks() == hits
    assert seen == ["evalsha", "script", "evalsha"], seen.commands  # NOSCRIPT, loaded, again
    assert [word.lower() for word in seen.commands[1][:2]] == ["script", "load"]
    async with round_trips(redis_url) as again:
        assert await checks() == hits
    assert again == ["evalsha"]
    # Every lookup of the three rounds answered by Redis, none failed or was skipped.
    count = 3 * len(sessions)
    assert second.lookups() == {("session", "l2", "hit"): count, ("access", "l2", "hit"): count}
    assert second.redis_failures() == {}
    assert second.platform_calls() == 0
    assert (second.guard.state, second.guard.is_open, second.guard.skipped) == ("ok", False, 0)


def test_a_lookup_is_seven_arguments_as_resp_bulk_strings() -> None:
    lookup = ChainLookup("p:", "r:", "s", "k@1", "q:", "g:", "")
    assert encode_lookup(lookup) == (
        b"$2\r\np:\r\n$2\r\nr:\r\n$1\r\ns\r\n$3\r\nk@1\r\n$2\r\nq:\r\n$2\r\ng:\r\n$0\r\n\r\n"
    )
    # Lengths count bytes, not characters (RESP's bulk strings are bytes).
    assert encode_lookup(lookup._replace(scope="ü")).split(b"\r\n")[4:6] == [b"$2", "ü".encode()]
    # A session's lookup: its key is its scope.
    assert encode_lookup(lookup._replace(scope="k@1")).split(b"\r\n")[4:8] == [
        b"$3",
        b"k@1",
        b"$3",
        b"k@1",
    ]
    # The whole command, as Redis reads it: three words and seven arguments per lookup.
    command = evalsha_command(b"abc", [encode_lookup(lookup), encode_lookup(lookup)])
    assert command.startswith(b"*17\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n")
    assert command.endswith(encode_lookup(lookup) * 2)


@given(st.lists(st.text(max_size=6), min_size=7, max_size=7), st.booleans())
def test_a_lookup_is_encoded_field_by_field_whatever_it_shares(
    fields: list[str], same: bool
) -> None:
    """The fields a cache's lookups share are encoded once and remembered; the encoding is the
    same as field by field."""
    if same:
        fields[3] = fields[2]
    lookup = ChainLookup(*fields)
    expected = b"".join(b"$%d\r\n%b\r\n" % (len(f.encode()), f.encode()) for f in fields)
    assert encode_lookup(lookup) == expected
    assert encode_lookup(lookup) == expected  # (from the memo)


async def test_the_script_reads_fields_that_hold_colons_digits_and_any_bytes(
    redis_client: redis.Redis,
) -> None:
    """Fields made of what separates them (":", digits, "@", RESP's CR LF and "$") and
    non-ASCII are read back exactly: the script finds both entries under the keys the fields
    spell."""
    customer = "cust:12:ü"
    scope = "scope:3\r\n$1\r\nx"
    lookup = ChainLookup("pre:1:ä:", "rec:2:", scope, "key:4@5", "then:6:", "trec:7:", ":8:é")
    entry = f'[1, 2, 3, "{customer}"]'
    await redis_client.set(f"rec:2:{scope}", "9")
    await redis_client.set("pre:1:ä:key:4@5@9", entry)
    await redis_client.set(f"then:6:{customer}:8:é@0", "follow-up")
    other = lookup._replace(key="missing")
    reader = ChainReader(redis_client)
    found, missed = await asyncio.gather(reader.read(lookup), reader.read(other))
    assert reader.batches == 1  # both in one script call
    assert found == ChainAnswer(entry.encode(), None, None, customer.encode(), b"follow-up")
    assert missed == ChainAnswer(None)
