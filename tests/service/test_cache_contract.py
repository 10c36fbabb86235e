"""The contract every cache tier keeps (PayloadCache); one suite, parametrized over tiers."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from gateway.store.cache import CacheEntry, token_key
from gateway.store.memory import MemoryCache
from tests.service.conftest import CacheFactory, ManualClock


def entry(
    clock: ManualClock, value: object, fresh: float = 60, stale: float = 0
) -> CacheEntry[object]:
    until = clock.now + timedelta(seconds=fresh)
    return CacheEntry(value, until, until + timedelta(seconds=stale))


async def test_get_what_was_set(cache_factory: CacheFactory, clock: ManualClock) -> None:
    cache = cache_factory(1000, clock)
    assert await cache.get("a") is None
    stored = entry(clock, "value")
    await cache.set("a", stored)
    assert await cache.get("a") == stored
    assert await cache.get("b") is None


async def test_set_replaces(cache_factory: CacheFactory, clock: ManualClock) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("a", entry(clock, 1))
    await cache.set("a", entry(clock, 2))
    found = await cache.get("a")
    assert found is not None
    assert found.value == 2


async def test_entry_is_gone_after_stale_until(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("a", entry(clock, "v", fresh=10, stale=0))
    clock.advance(9.9)
    assert await cache.get("a") is not None
    clock.advance(0.1)
    assert await cache.get("a") is None


async def test_expired_entry_is_kept_for_the_stale_window(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("a", entry(clock, "v", fresh=10, stale=30))
    clock.advance(20)
    found = await cache.get("a")
    assert found is not None
    assert not found.fresh_at(clock.now)
    clock.advance(20)
    assert await cache.get("a") is None


async def test_already_dead_entry_is_not_stored(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("a", entry(clock, "v", fresh=0, stale=0))
    assert await cache.get("a") is None


async def test_l1_is_bounded_least_recently_used_go_first(clock: ManualClock) -> None:
    # L1 only: the shared tier's size is Redis's maxmemory policy, not ours.
    cache: MemoryCache[object] = MemoryCache(100, clock)
    for i in range(100):
        await cache.set(f"k{i}", entry(clock, i))
    assert await cache.get("k0") is not None  # k0 is now the most recently used
    for i in range(100, 150):
        await cache.set(f"k{i}", entry(clock, i))
    assert await cache.get("k0") is not None
    assert await cache.get("k1") is None
    present = [i for i in range(150) if await cache.get(f"k{i}") is not None]
    assert len(present) == 100


async def test_l1_drops_an_expired_entry_when_a_lookup_finds_it(clock: ManualClock) -> None:
    cache: MemoryCache[object] = MemoryCache(100, clock)
    await cache.set("short", entry(clock, 1, fresh=5, stale=5))
    await cache.set("long", entry(clock, 2, fresh=60, stale=120))
    clock.advance(10)  # "short" is at its stale_until: gone
    assert cache.peek("short") is None
    assert len(cache) == 1
    assert cache.peek("long", now=clock.now) is not None
    # A reading handed in by the caller is used instead of the clock.
    assert cache.peek("long", now=clock.now + timedelta(seconds=200)) is None


async def test_l1_storing_a_key_again_makes_it_the_most_recent(clock: ManualClock) -> None:
    cache: MemoryCache[object] = MemoryCache(100, clock)
    for i in range(100):
        await cache.set(f"k{i}", entry(clock, i))
    await cache.set("k0", entry(clock, "again"))
    await cache.set("k100", entry(clock, 100))
    assert cache.peek("k1") is None  # the least recently used went
    found = cache.peek("k0")
    assert found is not None
    assert found.value == "again"


async def test_invalidate_customer_drops_only_that_customer(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("c1:premium", entry(clock, 1), customer_id="c1")
    await cache.set("c1:archive", entry(clock, 2), customer_id="c1")
    await cache.set("c2:premium", entry(clock, 3), customer_id="c2")
    await cache.set("unscoped", entry(clock, 4))
    await cache.invalidate_customer("c1")
    assert await cache.get("c1:premium", customer_id="c1") is None
    assert await cache.get("c1:archive", customer_id="c1") is None
    assert await cache.get("c2:premium", customer_id="c2") is not None
    assert await cache.get("unscoped") is not None
    # New answers for the customer are stored and found again.
    await cache.set("c1:premium", entry(clock, 5), customer_id="c1")
    found = await cache.get("c1:premium", customer_id="c1")
    assert found is not None
    assert found.value == 5
    await cache.invalidate_customer("c1")
    assert await cache.get("c1:premium", customer_id="c1") is None


async def test_value_asked_for_before_an_invalidation_is_not_found_after_it(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    # A fetch reads the generation, the platform answers, meanwhile a callback invalidates:
    # the pre-change answer must not become visible under the new generation.
    cache = cache_factory(1000, clock)
    seen = await cache.generation("c1")
    await cache.invalidate_customer("c1")
    await cache.set("c1:premium", entry(clock, "old"), customer_id="c1", generation=seen)
    assert await cache.get("c1:premium", customer_id="c1") is None
    current = await cache.generation("c1")
    assert current != seen
    await cache.set("c1:premium", entry(clock, "new"), customer_id="c1", generation=current)
    found = await cache.get("c1:premium", customer_id="c1")
    assert found is not None
    assert found.value == "new"


async def test_invalidating_an_unknown_customer_is_harmless(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.invalidate_customer("nobody")
    await cache.set("x", entry(clock, 1), customer_id="somebody")
    assert await cache.get("x", customer_id="somebody") is not None


async def test_invalidate_all_drops_every_entry(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("c1:premium", entry(clock, 1), customer_id="c1")
    await cache.set("c2:premium", entry(clock, 2), customer_id="c2")
    await cache.set("unscoped", entry(clock, 3))
    await cache.invalidate_all()
    assert await cache.get("c1:premium", customer_id="c1") is None
    assert await cache.get("c2:premium", customer_id="c2") is None
    assert await cache.get("unscoped") is None
    # The cache keeps working afterwards.
    await cache.set("c1:premium", entry(clock, 4), customer_id="c1")
    found = await cache.get("c1:premium", customer_id="c1")
    assert found is not None
    assert found.value == 4


async def test_value_asked_for_before_invalidate_all_is_not_found_after_it(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.invalidate_customer("c2")  # one scope with a generation of its own, one without
    seen = {scope: await cache.generation(scope) for scope in ("c1", "c2")}
    await cache.invalidate_all()
    for scope, generation in seen.items():
        await cache.set(f"{scope}:x", entry(clock, "old"), customer_id=scope, generation=generation)
        assert await cache.get(f"{scope}:x", customer_id=scope) is None, scope
        assert await cache.generation(scope) != generation


async def test_a_hit_names_the_tier_that_answered(
    cache_factory: CacheFactory, clock: ManualClock
) -> None:
    cache = cache_factory(1000, clock)
    await cache.set("a", entry(clock, 1))
    first = await cache.get("a")
    second = await cache.get("a")
    assert first is not None
    assert second is not None
    # Layered: ``set`` filled L1 too, so L1 answers (an L2 answer: tests/service/test_layered).
    expected = {"MemoryCache": "l1", "RedisCache": "l2", "LayeredCache": "l1"}
    assert first.tier == second.tier == expected[type(cache).__name__]


def test_token_keys_never_contain_the_token() -> None:
    token = "demo-session-plain"
    key = token_key("session", token)
    assert token not in key
    assert key == "session:" + hashlib.sha256(token.encode()).hexdigest()
    assert token_key("session", token) != token_key("transfer", token)


# -- L1 specifics ---------------------------------------------------------------------------


async def test_l1_invalidation_does_not_touch_the_entries(clock: ManualClock) -> None:
    """O(1): invalidation moves the customer to a new generation; nothing is scanned."""
    cache: MemoryCache[int] = MemoryCache(100_000, clock)
    for i in range(2_000):
        await cache.set(
            f"k{i}",
            CacheEntry(i, clock.now + timedelta(60), clock.now + timedelta(60)),
            customer_id=f"c{i % 7}",
        )
    before = len(cache)
    await cache.invalidate_customer("c3")
    assert len(cache) == before  # unreachable entries age out of the LRU, none are visited
    assert await cache.get("k3", customer_id="c3") is None
    assert await cache.get("k4", customer_id="c4") is not None


async def test_l1_generation_records_stay_bounded(clock: ManualClock) -> None:
    cache: MemoryCache[int] = MemoryCache(100, clock)
    await cache.set(
        "old",
        CacheEntry(1, clock.now + timedelta(seconds=10), clock.now + timedelta(seconds=10)),
        customer_id="c0",
    )
    for i in range(100):
        await cache.invalidate_customer(f"c{i}")
    clock.advance(11)  # every entry those records hide is dead now
    await cache.invalidate_customer("late")
    assert len(cache._generations) == 1
    # An invalidation storm among live entries clears the cache rather than grow or revive.
    await cache.set(
        "live",
        CacheEntry(2, clock.now + timedelta(seconds=60), clock.now + timedelta(seconds=60)),
        customer_id="c5",
    )
    for i in range(101):
        await cache.invalidate_customer(f"d{i}")
    assert len(cache._generations) <= 1
    assert await cache.get("live", customer_id="c5") is None
