"""The shared tier's wire format and its Redis specifics (the contract suite covers the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import redis.asyncio as redis
from hypothesis import given
from hypothesis import strategies as st

from gateway.access.cached import CachedAccess
from gateway.access.codecs import CachedAccessCodec, CustomerIdCodec, PayloadCodec
from gateway.config import AccessSettings
from gateway.core.decision import evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule
from gateway.store import codec as codec_module
from gateway.store import entries
from gateway.store.cache import CacheEntry
from gateway.store.codec import EPOCH, MICROSECOND, CodecError, EntryCodec, lifetime, utc_instant
from gateway.store.redis_cache import RedisCache
from tests.service.conftest import T0, ManualClock

ITEM = AccessItem(
    "premium",
    granted=True,
    blocked=False,
    lifetime_start=datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    lifetime_end=datetime(2026, 1, 1, tzinfo=UTC),
    window_start=time(6, 0),
    window_end=time(18, 30, 15),
    pause_start=None,
    pause_end=datetime(2025, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC),
    max_cache_date=T0 + timedelta(minutes=2),
)
PAYLOAD = AccessPayload(
    "100001",
    customer_blocked=False,
    granted=True,
    items=(ITEM, AccessItem("x", False)),
    fetched_at=T0 + timedelta(microseconds=7),
)


def test_payload_round_trips_exactly() -> None:
    codec = EntryCodec(PayloadCodec())
    entry = CacheEntry(PAYLOAD, T0 + timedelta(seconds=60), T0 + timedelta(seconds=360))
    raw = codec.encode(entry)
    assert codec.decode(raw) == entry
    assert len(raw) < 250  # compact: two items, every field


def test_a_cached_access_decides_again_after_the_trip() -> None:
    rule = AccessRule(("premium",))
    policy = AccessSettings().validity_policy()
    decided = CachedAccess(PAYLOAD, evaluate_access(PAYLOAD, rule, T0, policy), T0)
    codec = EntryCodec(CachedAccessCodec())
    back = codec.decode(codec.encode(CacheEntry(decided, T0, T0))).value
    assert back.payload == PAYLOAD
    later = T0 + timedelta(seconds=30)
    assert back.decide(rule, later, policy) == evaluate_access(PAYLOAD, rule, later, policy)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[2, 0, 0, null]",  # another format version
        b"[1, 0]",
        b'[1, "x", 0, null]',
        b"[1, 0, 0, 42]",  # a customer id must be a string
        b"[1, 0, 253402300800000000, null]",  # stale_until past datetime.max
        b"[1, 0, -62135596800000001, null]",  # before datetime.min
        b"[1, 253402300800000000, 0, null]",  # fresh_until past datetime.max
    ],
)
def test_unreadable_entries_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        EntryCodec(CustomerIdCodec()).decode(raw)


@pytest.mark.parametrize(
    ("fresh_until", "stale_until"),
    [
        (T0, T0 + timedelta(seconds=300)),
        (T0, T0),
        (T0 + timedelta(seconds=60), T0),  # stale before fresh
        (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("owner", [None, "sessions-of:100001", "anything"])
def test_a_decoded_entry_is_the_entry_that_was_encoded(
    fresh_until: datetime, stale_until: datetime, owner: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entries, "_SHAPES", {})  # room for this test's shapes (at most 64)
    codec = EntryCodec(CustomerIdCodec())
    entry = CacheEntry("100001", fresh_until, stale_until, owner=owner)
    for tier in ("l1", "l2"):
        back, owner_generation = codec.decode_owned(codec.encode(entry, 7), tier)
        assert (back, back.tier, back.owner, owner_generation) == (
            entry,
            tier,
            owner,
            7 * bool(owner),
        )
        assert (back.fresh_until, back.stale_until) == (fresh_until, stale_until)
        assert back.stale_until.tzinfo is UTC
        built = CacheEntry("100001", fresh_until, stale_until, tier, owner)
        assert (type(back), back._shape) == (type(built), built._shape)
        if owner != "anything":  # the shared shape, not a copy (an owner of its own has its own)
            assert back._shape is built._shape


async def test_corrupt_value_in_redis_is_a_miss(redis_client: redis.Redis) -> None:
    clock = ManualClock()
    cache = RedisCache(redis_client, "session", EntryCodec(CustomerIdCodec()), clock)
    await redis_client.set("pwg:v1:session:0:k", b"garbage")
    assert await cache.get("k") is None


async def test_entries_expire_in_redis_at_stale_until(redis_client: redis.Redis) -> None:
    clock = ManualClock(datetime.now(UTC))
    cache = RedisCache(redis_client, "session", EntryCodec(CustomerIdCodec()), clock)
    until = clock.now + timedelta(seconds=30)
    await cache.set("k", CacheEntry("100001", clock.now + timedelta(seconds=10), until))
    ttl = await redis_client.pttl("pwg:v1:session:0:k")
    assert 29_000 < ttl <= 30_000


async def test_entry_lifetimes_are_capped_and_generation_records_expire(
    redis_client: redis.Redis,
) -> None:
    clock = ManualClock(datetime.now(UTC))
    cache = RedisCache(
        redis_client,
        "access",
        EntryCodec(CustomerIdCodec()),
        clock,
        max_lifetime=20,
        generation_ttl=25,
    )
    until = clock.now + timedelta(seconds=60)
    await cache.set("c1:r", CacheEntry("x", until, until), customer_id="c1")
    assert 19_000 < await redis_client.pttl("pwg:v1:access:0:c1:r@0") <= 20_000
    await cache.invalidate_customer("c1")
    assert 24_000 < await redis_client.pttl("pwg:v1:access:gen:c1") <= 25_000


async def test_a_generation_is_never_used_twice(redis_client: redis.Redis) -> None:
    # Once a generation record has expired the scope is back at 0; the next invalidation must
    # not hand out a generation an entry may still be stored under.
    clock = ManualClock()
    cache = RedisCache(redis_client, "access", EntryCodec(CustomerIdCodec()), clock)
    await cache.invalidate_customer("c1")
    first = await cache.generation("c1")
    await redis_client.delete("pwg:v1:access:gen:c1")  # as if the record had expired
    assert await cache.generation("c1") == (0, 0)
    await cache.invalidate_customer("c1")
    assert await cache.generation("c1") not in {first, (0, 0)}


async def test_invalidate_all_moves_to_a_new_epoch_that_other_processes_pick_up(
    redis_client: redis.Redis,
) -> None:
    clock = ManualClock()
    here = RedisCache(redis_client, "access", EntryCodec(CustomerIdCodec()), clock)
    there = RedisCache(redis_client, "access", EntryCodec(CustomerIdCodec()), clock)
    entry = CacheEntry("x", clock.now + timedelta(60), clock.now + timedelta(60))
    await here.set("k", entry)
    assert await there.get("k") == entry
    await here.invalidate_all()
    assert await here.get("k") is None
    # ``there`` keeps its epoch in memory until the invalidation bus tells it to re-read it.
    assert await there.get("k") == entry
    await there.epoch.invalidate_all()
    assert await there.get("k") is None
    assert await redis_client.get("pwg:v1:epoch") == b"1"


async def test_invalidation_is_one_counter_and_touches_no_entry(
    redis_client: redis.Redis,
) -> None:
    clock = ManualClock()
    cache = RedisCache(redis_client, "access", EntryCodec(CustomerIdCodec()), clock)
    for i in range(50):
        entry = CacheEntry(str(i), clock.now + timedelta(60), clock.now + timedelta(60))
        await cache.set(f"c1:r{i}", entry, customer_id="c1")
    keys_before = set(await redis_client.keys("*"))
    await cache.invalidate_customer("c1")
    keys_after = set(await redis_client.keys("*"))
    # One record for the customer and the counter generations are drawn from; no entry visited.
    assert keys_after - keys_before == {b"pwg:v1:access:gen:c1", b"pwg:v1:gen-counter"}
    assert keys_before <= keys_after
    assert await cache.get("c1:r0", customer_id="c1") is None
    assert await cache.generation("c1") == (0, 1)


_MICROSECONDS = st.integers(
    min_value=(datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND,
    max_value=(datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND,
)


@given(st.lists(_MICROSECONDS, max_size=6), st.lists(st.integers(-(10**12), 10**12), max_size=6))
def test_instants_and_lifetimes_are_made_exactly_whatever_was_made_before(
    instants: list[int], lifetimes: list[int]
) -> None:
    # Each twice: the second from the memo.
    for value in [*instants, *instants[::-1], *instants]:
        made = utc_instant(value)
        assert made == EPOCH + value * MICROSECOND
        assert made.tzinfo is UTC
    for value in [*lifetimes, *lifetimes]:
        assert lifetime(value) == value * MICROSECOND


def test_the_lifetimes_remembered_are_bounded() -> None:
    for value in range(1_000):
        assert lifetime(value) == timedelta(microseconds=value)
    assert len(codec_module._LIFETIMES) <= codec_module._MAX_LIFETIMES
