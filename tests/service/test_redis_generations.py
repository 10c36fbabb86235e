"""An L2 hit costs one Redis round trip: the generation records are kept in process while the
invalidation bus is subscribed (gateway/store/redis_generations.py), and every invalidation
still reaches every lookup: through the bus, at once in the process that made it, from Redis
while the bus is away, and by forgetting everything when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import pytest
import redis.asyncio as redis

from gateway.store.bus import InvalidationBus
from gateway.store.cache import CacheEntry, sessions_scope
from gateway.store.codec import EntryCodec
from gateway.store.layered import LayeredCache
from gateway.store.memory import MemoryCache
from gateway.store.redis_batch import GetBatcher
from gateway.store.redis_cache import EPOCH_KEY, Epoch, RedisCache
from gateway.store.redis_chain import chain_reader
from gateway.store.redis_connect import connect_redis
from gateway.store.redis_generations import Generations
from gateway.store.redis_guard import RedisGuard
from tests.service.conftest import ManualClock, PlainValues
from tests.service.processes import eventually

SESSION = "session:" + "ab" * 32  # a session validation's key, which is also its scope
CUSTOMER = "100001"
ACCESS = f"{CUSTOMER}:premium"


def codec() -> EntryCodec[Any]:
    return EntryCodec(PlainValues())


def entry(clock: ManualClock, value: object, owner: str | None = None) -> CacheEntry[Any]:
    until = clock.now + timedelta(seconds=60)
    return CacheEntry(value, until, until, owner=owner)


class Node:
    """One gateway process's Redis tier, wired as gateway/access/build.py wires it: one epoch,
    one set of generation records, one read batcher and one chain reader for its session and
    access caches, each an L1 in front of Redis, all registered with its invalidation bus
    (running from the start)."""

    def __init__(
        self,
        url: str,
        clock: ManualClock,
        *,
        client: redis.Redis | None = None,
        retry_delay: float = 0.05,
    ) -> None:
        self.errors: list[str] = []
        self.client = client if client is not None else connect_redis(url, connect_timeout=2.0)
        self.guard = RedisGuard(timeout=2.0, on_error=self.errors.append)
        self.bus = InvalidationBus(self.client, guard=self.guard, retry_delay=retry_delay)
        self.epoch = Epoch(self.client)
        self.generations = Generations(self.client, listening=self.bus.listening)
        self.batcher = GetBatcher(self.client)
        self.chain = chain_reader(self.client)
        self.bus.register(self.epoch)
        self.bus.register(self.generations)
        self.session_l1: MemoryCache[Any] = MemoryCache(1000, clock)
        self.access_l1: MemoryCache[Any] = MemoryCache(1000, clock)
        self.bus.register(self.session_l1)
        self.bus.register(self.access_l1)
        self.session_l2 = self._redis("session", clock)
        self.access_l2 = self._redis("access", clock)
        self.sessions = LayeredCache(
            self.session_l1, self.session_l2, guard=self.guard, publish=self.bus.publish
        )
        self.access = LayeredCache(
            self.access_l1, self.access_l2, guard=self.guard, publish=self.bus.publish
        )
        self.task = asyncio.create_task(self.bus.run())

    def _redis(self, namespace: str, clock: ManualClock) -> RedisCache[Any]:
        return RedisCache(
            self.client,
            namespace,
            codec(),
            clock,
            epoch=self.epoch,
            generations=self.generations,
            batcher=self.batcher,
            chain=self.chain,
        )

    async def lookup(self) -> tuple[CacheEntry[Any] | None, CacheEntry[Any] | None]:
        """What a request does: its session's validation, then the customer's access answer
        (as two lookups that know nothing of each other)."""
        session = await self.sessions.get(SESSION, customer_id=SESSION)
        access = await self.access.get(ACCESS, customer_id=CUSTOMER)
        return session, access

    async def chained_lookup(
        self, session_key: str = SESSION, suffix: str = ":premium"
    ) -> tuple[CacheEntry[Any] | None, CacheEntry[Any] | None]:
        """What the access service does: the same two lookups, the second one announced to
        the first (gateway/store/companion.py)."""
        then = self.access.companion(suffix)
        assert then is not None
        session = await self.sessions.get_chained(session_key, customer_id=session_key, then=then)
        if session is None or session.value is None:
            return session, None
        customer = session.value
        return session, await then.get(f"{customer}{suffix}", customer_id=customer)

    async def forget_l1(self) -> None:
        """Empty the L1 caches only (as LRU eviction would): the next lookup goes to Redis."""
        await self.session_l1.invalidate_all()
        await self.access_l1.invalidate_all()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.aclose()


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start_node(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[StartNode]:
    started: list[Node] = []

    async def start(*, plain: bool = False, retry_delay: float = 0.05) -> Node:
        # A plain redis-py client reports a killed subscription as an error; the gateway's own
        # reconnects it silently (the bus hears of it through the connect hook).
        client = redis.from_url(redis_url) if plain else None
        node = Node(redis_url, ManualClock(), client=client, retry_delay=retry_delay)
        started.append(node)
        await asyncio.wait_for(node.bus.connected.wait(), 5)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.stop()


async def commands(client: redis.Redis) -> Counter[str]:
    """Every command the server has executed so far, by name (``INFO commandstats``)."""
    stats: dict[str, dict[str, Any]] = await client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


# Not per lookup: the INFO that counts, and what a (re)connecting client or subscription sends.
CONNECTION_COMMANDS = {"info", "client", "hello", "select", "auth", "ping", "subscribe"}


@contextlib.asynccontextmanager
async def counted(client: redis.Redis) -> AsyncIterator[Counter[str]]:
    """The data commands Redis executes inside the block, by name."""
    seen: Counter[str] = Counter()
    before = await commands(client)
    yield seen
    seen.update(await commands(client) - before)
    for name in CONNECTION_COMMANDS:
        del seen[name]


async def warm(node: Node, clock: ManualClock) -> None:
    """Another process validated the session and asked for the customer's access."""
    owned = entry(clock, CUSTOMER, owner=sessions_scope(CUSTOMER))
    await node.sessions.set(SESSION, owned, customer_id=SESSION)
    await node.access.set(ACCESS, entry(clock, "granted"), customer_id=CUSTOMER)


async def assert_found(node: Node, tier: str = "l2") -> None:
    session, access = await node.lookup()
    assert session is not None
    assert access is not None
    assert (session.value, access.value) == (CUSTOMER, "granted")
    assert (session.tier, access.tier) == (tier, tier)


# --- (1) one round trip per L2 hit -------------------------------------------------------------


async def test_an_l2_session_and_access_hit_is_one_get_per_lookup(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    a, b = await start_node(), await start_node()
    await warm(a, ManualClock())

    async with counted(redis_client) as cold:
        await assert_found(b)
    # Cold: the epoch, and each of the three records (the session's scope, its owner, the
    # customer) once, each a GET and a PTTL in one round trip; and the two entries.
    assert cold == {"get": 1 + 3 + 2, "pttl": 3}

    for _ in range(3):
        await b.forget_l1()
        async with counted(redis_client) as warm_hit:
            await assert_found(b)
        assert warm_hit == {"get": 2}  # one GET per lookup, nothing else
    await b.forget_l1()
    # And the platform path's generation, read before every fetch, costs nothing either.
    async with counted(redis_client) as generation:
        await b.access.generation(CUSTOMER)
        await b.sessions.generation(SESSION)
    assert generation == {}
    assert a.errors == b.errors == []


async def test_concurrent_l2_hits_of_one_loop_tick_are_one_mget(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    customers = [f"c{i}" for i in range(20)]
    for customer in customers:
        await a.access.set(f"{customer}:premium", entry(clock, customer), customer_id=customer)

    async def requests() -> list[CacheEntry[Any] | None]:
        return await asyncio.gather(
            *(b.access.get(f"{c}:premium", customer_id=c) for c in [*customers, "nobody"])
        )

    await requests()  # b learns the records
    await b.forget_l1()
    async with counted(redis_client) as seen:
        found = await requests()
    assert [e.value if e is not None else None for e in found] == [*customers, None]
    assert seen == {"mget": 1}
    assert a.errors == b.errors == []


async def test_without_a_subscription_every_lookup_reads_the_records(
    redis_client: redis.Redis,
) -> None:
    # No bus at all (or not subscribed yet): nothing is kept, as before this cache existed.
    clock = ManualClock()
    generations = Generations(redis_client, listening=lambda: False)
    cache: RedisCache[Any] = RedisCache(redis_client, "session", codec(), clock)
    here: RedisCache[Any] = RedisCache(
        redis_client, "session", codec(), clock, generations=generations
    )
    await cache.set(SESSION, entry(clock, CUSTOMER, sessions_scope(CUSTOMER)), customer_id=SESSION)
    await here.epoch.current()  # (the epoch is kept in memory, as it always was)
    for _ in range(2):
        async with counted(redis_client) as seen:
            found = await here.get(SESSION, customer_id=SESSION)
        assert found is not None
        assert seen == {"get": 3}  # the scope's record, the entry, its owner's record
    assert len(generations) == 0


# --- (2) a record read in flight during an invalidation is not kept ----------------------------


class HeldReads:
    """A client whose pipelined record reads Redis answers at once, but whose answers reach the
    caller only once ``release`` is set; ``answered`` is set when Redis has answered one."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.answered = asyncio.Event()
        self.release = asyncio.Event()
        self.reads = 0

    def pipeline(self, transaction: bool = True) -> _HeldPipeline:
        return _HeldPipeline(self, self._client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _HeldPipeline:
    def __init__(self, owner: HeldReads, pipe: Any) -> None:
        self._owner = owner
        self._pipe = pipe

    async def __aenter__(self) -> _HeldPipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pipe.__aexit__(*exc)

    def get(self, key: str) -> None:
        self._pipe.get(key)

    def pttl(self, key: str) -> None:
        self._pipe.pttl(key)

    async def execute(self) -> list[Any]:
        answer: list[Any] = await self._pipe.execute()
        self._owner.reads += 1
        self._owner.answered.set()
        await self._owner.release.wait()
        return answer


@pytest.mark.parametrize(
    "invalidation",
    [
        pytest.param("bus-scope", id="another-process-then-its-message"),
        pytest.param("bus-everything", id="everything-or-a-reconnect"),
        pytest.param("own", id="this-process"),
    ],
)
async def test_a_record_read_in_flight_during_an_invalidation_is_not_kept(
    redis_client: redis.Redis, invalidation: str
) -> None:
    clock = ManualClock()
    held = HeldReads(redis_client)
    generations = Generations(cast(redis.Redis, held), listening=lambda: True)
    here: RedisCache[Any] = RedisCache(
        redis_client, "access", codec(), clock, generations=generations
    )
    there: RedisCache[Any] = RedisCache(redis_client, "access", codec(), clock)
    await there.invalidate_customer(CUSTOMER)
    _, old = await there.generation(CUSTOMER)
    key = here.generation_key(CUSTOMER)

    lookup = asyncio.create_task(generations.current(key))
    await held.answered.wait()  # Redis has answered with the old record; the answer waits
    if invalidation == "own":
        await here.invalidate_customer(CUSTOMER)
    else:
        await there.invalidate_customer(CUSTOMER)
        if invalidation == "bus-scope":
            await generations.invalidate_customer(CUSTOMER)  # what the bus does on its message
        else:
            await generations.invalidate_all()
    _, new = await there.generation(CUSTOMER)
    assert new != old
    held.release.set()

    assert await lookup == old  # the lookup concurrent with the invalidation may use it ...
    assert held.reads == 1
    assert await generations.current(key) == new  # ... but it was not kept: read again
    assert held.reads == 2
    assert await generations.current(key) == new  # and this one is kept
    assert held.reads == 2


async def test_a_record_read_is_kept_until_the_record_expires(redis_client: redis.Redis) -> None:
    clock, now = ManualClock(), [1000.0]
    held = HeldReads(redis_client)
    held.release.set()
    generations = Generations(cast(redis.Redis, held), listening=lambda: True, clock=lambda: now[0])
    cache: RedisCache[Any] = RedisCache(
        redis_client,
        "access",
        codec(),
        clock,
        generations=generations,
        max_lifetime=20,
        generation_ttl=30,
    )
    await cache.invalidate_customer(CUSTOMER)  # a record that expires in 30 s
    await cache.invalidate_customer("c2")
    await redis_client.persist(cache.generation_key("c2"))  # and one that never expires
    first = await cache.generation(CUSTOMER)
    await cache.generation("c2")
    now[0] += 29
    assert await cache.generation(CUSTOMER) == first
    await cache.generation("c2")
    assert held.reads == 2
    now[0] += 1.5  # past the record's expiry: not trusted any more (Redis has dropped it)
    await redis_client.delete(cache.generation_key(CUSTOMER))
    assert await cache.generation(CUSTOMER) == (first[0], 0)
    await cache.generation("c2")
    assert held.reads == 3


async def test_the_records_kept_are_bounded(redis_client: redis.Redis) -> None:
    held = HeldReads(redis_client)
    held.release.set()
    generations = Generations(cast(redis.Redis, held), max_entries=2, listening=lambda: True)
    for key in ("k1", "k2", "k1", "k3"):  # k2 is then the least recently used
        await generations.current(key)
    assert (len(generations), held.reads) == (2, 3)
    await generations.current("k1")
    await generations.current("k3")
    assert held.reads == 3
    await generations.current("k2")
    assert held.reads == 4


async def test_an_epoch_read_in_flight_during_invalidate_all_is_not_kept(
    redis_client: redis.Redis,
) -> None:
    class HeldGets:
        def __init__(self) -> None:
            self.answered, self.release, self.reads = asyncio.Event(), asyncio.Event(), 0

        async def get(self, key: str) -> Any:
            value = await redis_client.get(key)
            self.reads += 1
            self.answered.set()
            await self.release.wait()
            return value

        def __getattr__(self, name: str) -> Any:
            return getattr(redis_client, name)

    held = HeldGets()
    epoch = Epoch(cast(redis.Redis, held))
    lookup = asyncio.create_task(epoch.current())
    await held.answered.wait()
    await redis_client.incr(EPOCH_KEY)  # another process moved everything to a new epoch ...
    await epoch.invalidate_all()  # ... and the bus said so
    held.release.set()
    assert await lookup == 0
    assert await epoch.current() == 1
    assert held.reads == 2


async def test_an_l2_hit_an_invalidation_overtook_is_not_copied_into_l1(
    redis_client: redis.Redis,
) -> None:
    clock = ManualClock()

    class HeldEntries:
        """Holds the answer to the entry's GET until ``release``."""

        def __init__(self) -> None:
            self.answered, self.release = asyncio.Event(), asyncio.Event()

        async def get(self, key: str) -> Any:
            value = await redis_client.get(key)
            if "@" in key:
                self.answered.set()
                await self.release.wait()
            return value

        def __getattr__(self, name: str) -> Any:
            return getattr(redis_client, name)

    held = HeldEntries()
    generations = Generations(redis_client, listening=lambda: True)
    l1: MemoryCache[Any] = MemoryCache(100, clock)
    l2: RedisCache[Any] = RedisCache(
        cast(redis.Redis, held), "access", codec(), clock, generations=generations
    )
    errors: list[str] = []
    cache = LayeredCache(l1, l2, guard=RedisGuard(timeout=2.0, on_error=errors.append))
    there: RedisCache[Any] = RedisCache(redis_client, "access", codec(), clock)
    await there.set(ACCESS, entry(clock, "granted"), customer_id=CUSTOMER)

    lookup = asyncio.create_task(cache.get(ACCESS, customer_id=CUSTOMER))
    await held.answered.wait()
    await there.invalidate_customer(CUSTOMER)  # another process, and its message arrives:
    await l1.invalidate_customer(CUSTOMER)
    await generations.invalidate_customer(CUSTOMER)
    held.release.set()
    found = await lookup
    assert found is not None  # answered: it was concurrent with the invalidation
    assert await l1.get(ACCESS, customer_id=CUSTOMER) is None  # but not kept under the new one
    assert await cache.get(ACCESS, customer_id=CUSTOMER) is None
    assert errors == []


# --- (3) another process's invalidation, over the bus and without it ---------------------------


async def test_another_process_s_invalidation_is_honoured_once_the_bus_delivered_it(
    start_node: StartNode,
) -> None:
    clock = ManualClock()
    a, b = await start_node(), await start_node()
    await warm(a, clock)
    await assert_found(b)  # b knows the records now (and holds the entries in its L1)
    invalidations: list[tuple[Callable[[], Awaitable[None]], tuple[bool, bool]]] = [
        # what a invalidates, and which of (session, access) b must then miss
        (lambda: a.access.invalidate_customer(CUSTOMER), (False, True)),
        (lambda: a.sessions.invalidate_customer(sessions_scope(CUSTOMER)), (True, False)),
        (lambda: a.sessions.invalidate_customer(SESSION), (True, False)),
    ]
    for invalidate, missed in invalidations:
        await warm(a, clock)
        await b.forget_l1()
        await assert_found(b)  # from Redis, with the records it keeps
        delivered = b.generations.changes
        await invalidate()

        async def heard(delivered: int = delivered) -> bool:
            return b.generations.changes > delivered

        await eventually(heard, within=2.0)
        session, access = await b.lookup()
        assert (session is None, access is None) == missed
        await b.forget_l1()  # not only because its L1 heard it: its Redis lookups too
        session, access = await b.lookup()
        assert (session is None, access is None) == missed
    assert a.errors == b.errors == []


async def test_while_the_bus_is_away_lookups_read_the_records_from_redis(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    clock = ManualClock()
    a = await start_node()
    b = await start_node(plain=True, retry_delay=30)  # stays away once its subscription dies
    await warm(a, clock)
    await assert_found(b)
    assert len(b.generations) == 3
    await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def away() -> bool:
        return not b.bus.connected.is_set()

    await eventually(away, within=2.0)
    await a.access.invalidate_customer(CUSTOMER)  # b does not hear it
    await b.forget_l1()  # (its L1 is cleared when the bus comes back, as always)
    await b.epoch.current()  # (re-read once if the lost subscription's connect hook reset it)
    async with counted(redis_client) as seen:
        session, access = await b.lookup()
    assert session is not None
    assert access is None
    # Every record read from Redis, before the entry: as before the records were kept.
    assert seen == {"get": 3 + 2}
    await a.sessions.invalidate_customer(sessions_scope(CUSTOMER))
    await b.forget_l1()
    session, _ = await b.lookup()
    assert session is None


# --- (4) a reconnected bus forgets the records --------------------------------------------------


@pytest.mark.parametrize(
    "plain",
    [
        pytest.param(False, id="silent-reconnect-connect-hook"),
        pytest.param(True, id="reported-error-resubscribe"),
    ],
)
async def test_after_a_reconnect_the_records_are_forgotten(
    start_node: StartNode, redis_client: redis.Redis, plain: bool
) -> None:
    clock = ManualClock()
    a = await start_node()
    b = await start_node(plain=plain)
    await warm(a, clock)
    await assert_found(b)
    assert len(b.generations) == 3
    # A message lost on the way: the record changes in Redis and b is not told ...
    await redis_client.incr("pwg:v1:gen-counter")
    await redis_client.set(b.access_l2.generation_key(CUSTOMER), 999_999)
    await b.forget_l1()
    _, access = await b.lookup()
    assert access is not None  # ... so b still trusts what it has, as its L1 would
    before = b.generations.changes
    await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    async def reconnected() -> bool:
        return b.generations.changes > before and b.bus.connected.is_set()

    await eventually(reconnected, within=3.0)
    assert len(b.generations) == 0
    session, access = await b.lookup()
    assert access is None  # read again from Redis: the missed invalidation is honoured
    assert session is not None
    assert "subscribe" in b.errors or not plain
