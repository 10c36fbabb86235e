"""The shared tier's wire format and its Redis specifics (the contract suite covers the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import redis.asyncio as redis

from gateway.config import AccessSettings
from gateway.core.decision import evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule
from gateway.service.access import CachedAccess
from gateway.service.cache import CacheEntry
from gateway.service.codec import (
    CachedAccessCodec,
    CodecError,
    CustomerIdCodec,
    EntryCodec,
    PayloadCodec,
)
from gateway.service.redis_cache import RedisCache
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
    ],
)
def test_unreadable_entries_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        EntryCodec(CustomerIdCodec()).decode(raw)


async def test_corrupt_value_in_redis_is_a_miss(redis_client: redis.Redis) -> None:
    clock = ManualClock()
    cache = RedisCache(redis_client, "session", EntryCodec(CustomerIdCodec()), clock)
    await redis_client.set("pwg:v1:session:k", b"garbage")
    assert await cache.get("k") is None


async def test_entries_expire_in_redis_at_stale_until(redis_client: redis.Redis) -> None:
    clock = ManualClock(datetime.now(UTC))
    cache = RedisCache(redis_client, "session", EntryCodec(CustomerIdCodec()), clock)
    until = clock.now + timedelta(seconds=30)
    await cache.set("k", CacheEntry("100001", clock.now + timedelta(seconds=10), until))
    ttl = await redis_client.pttl("pwg:v1:session:k")
    assert 29_000 < ttl <= 30_000


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
    assert keys_after - keys_before == {b"pwg:v1:gen:c1"}  # one new key; no entry visited
    assert keys_before <= keys_after
    assert await cache.get("c1:r0", customer_id="c1") is None
    assert await cache.generation("c1") == 1
