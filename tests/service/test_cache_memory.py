"""The compact forms the L1 keeps (issue 12, memory): they must lose nothing.

* :class:`CacheEntry` keeps ``stale_until`` as a shared distance from ``fresh_until`` and a
  session's owner as "the sessions scope of my value": both come back exactly.
* :class:`CachedAccess` keeps the payload packed and is its own first decision: the payload
  comes back equal, and a re-evaluation from it decides as the original payload does.
* :class:`MemoryCache` stores an entry without a tuple when its generations are the floor's:
  LRU order, eviction and invalidation still behave.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.access.cached import CachedAccess
from gateway.compiled import compiled_modules
from gateway.config import Settings
from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.store import entries
from gateway.store.cache import CacheEntry, sessions_scope
from gateway.store.memory import MemoryCache
from tests.service.conftest import T0, ManualClock

BERLIN = ZoneInfo("Europe/Berlin")
PLUS_TWO = timezone(timedelta(hours=2))
POLICY = Settings().access.validity_policy()


# -- CacheEntry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fresh_until", "stale_until"),
    [
        pytest.param(T0, T0, id="same-instant"),
        pytest.param(T0, T0 + timedelta(seconds=300), id="utc"),
        pytest.param(T0, (T0 + timedelta(seconds=30)).astimezone(PLUS_TWO), id="other-tzinfo"),
        # Berlin leaves summer time at 2025-10-26 03:00 (01:00 UTC): one zoneinfo on both
        # sides subtracts and adds by wall clock; fold tells the two 02:30s apart.
        pytest.param(
            datetime(2025, 10, 26, 1, 30, tzinfo=BERLIN),
            datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=BERLIN),
            id="dst-fold",
        ),
        pytest.param(
            datetime(2025, 10, 26, 1, 30, tzinfo=BERLIN),
            datetime(2025, 10, 26, 4, 30, tzinfo=BERLIN),
            id="dst-wall-clock",
        ),
        pytest.param(T0, datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=BERLIN), id="utc-to-zone"),
        pytest.param(datetime(2025, 1, 1), datetime(2025, 1, 1, 0, 5), id="naive"),
        pytest.param(T0, datetime(2025, 6, 11, 10, 5), id="aware-and-naive"),
        pytest.param(datetime.max.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC), id="max"),
        pytest.param(T0 + timedelta(seconds=60), T0, id="stale-before-fresh"),
    ],
)
def test_an_entry_gives_back_exactly_the_instants_it_was_given(
    fresh_until: datetime, stale_until: datetime
) -> None:
    entry = CacheEntry("v", fresh_until, stale_until)
    for given, kept in ((fresh_until, entry.fresh_until), (stale_until, entry.stale_until)):
        assert kept == given
        assert (kept.tzinfo, kept.fold, kept.replace(tzinfo=None)) == (
            given.tzinfo,
            given.fold,
            given.replace(tzinfo=None),
        )


@pytest.mark.parametrize(
    ("value", "owner"),
    [
        pytest.param("100001", sessions_scope("100001"), id="own-sessions-scope"),
        pytest.param("100001", sessions_scope("100002"), id="another-customer"),
        pytest.param("100001", "anything", id="any-scope"),
        pytest.param(None, sessions_scope("100001"), id="no-value"),
        pytest.param(100001, "sessions-of:100001", id="not-a-str"),
        pytest.param("100001", None, id="no-owner"),
    ],
)
def test_an_entry_gives_back_its_owner(value: object, owner: str | None) -> None:
    entry = CacheEntry(value, T0, T0 + timedelta(seconds=5), owner=owner)
    assert entry.owner == owner
    assert entry.value == value


def test_entries_compare_like_the_dataclass_they_were() -> None:
    until = T0 + timedelta(seconds=60)
    l1 = CacheEntry("100001", T0, until, owner=sessions_scope("100001"))
    l2 = CacheEntry("100001", T0, until, "l2", sessions_scope("100001"))
    assert (l1.tier, l2.tier) == ("l1", "l2")
    assert l1 == l2  # the tier is not compared
    assert hash(l1) == hash(l2)
    assert l1 != CacheEntry("100001", T0, until)  # the owner is
    assert l1 != CacheEntry("100001", T0, until + timedelta(microseconds=1), owner=l1.owner)
    assert l1 != ("100001", T0, until)
    assert "stale_until=" in repr(l2)
    assert "tier='l2'" in repr(l2)
    for entry in (l1, l2):
        for name, value in (("value", "x"), ("tier", "l3"), ("stale_until", T0)):
            with pytest.raises((FrozenInstanceError, AttributeError)):
                setattr(entry, name, value)
        with pytest.raises(FrozenInstanceError):
            del entry.value
        back = pickle.loads(pickle.dumps(entry))
        assert (back, back.tier) == (entry, entry.tier)


@pytest.mark.parametrize(
    ("stale_until", "owner", "value"),
    [
        pytest.param(T0 + timedelta(seconds=300), sessions_scope("100001"), "100001", id="shared"),
        pytest.param(T0 + timedelta(seconds=300), "anything", "100001", id="own-owner"),
        pytest.param(
            datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=BERLIN), None, "x", id="not-a-distance"
        ),
    ],
)
@pytest.mark.parametrize("tier", ["l1", "l2"])
def test_an_entry_in_another_tier_is_the_entry_built_again(
    stale_until: datetime, owner: str | None, value: object, tier: str
) -> None:
    entry = CacheEntry(value, T0, stale_until, "l2" if tier == "l1" else "l1", owner)
    moved = entry.in_tier(tier)
    built = CacheEntry(value, T0, stale_until, tier, owner)
    assert (moved, moved.tier, type(moved)) == (built, built.tier, type(built))
    assert moved._shape == built._shape
    assert moved._shape is entry._shape  # the very same shape: no copy per entry
    assert moved.stale_until == stale_until
    assert (moved.stale_until.tzinfo, moved.stale_until.fold) == (
        stale_until.tzinfo,
        stale_until.fold,
    )
    assert moved.owner == owner
    assert entry.tier != tier  # the entry itself is unchanged
    with pytest.raises(FrozenInstanceError):
        moved.value = "y"  # type: ignore[misc]


def test_shapes_are_shared_and_their_table_stays_small() -> None:
    first = CacheEntry("a", T0, T0 + timedelta(seconds=300))
    second = CacheEntry("b", T0 + timedelta(seconds=7), T0 + timedelta(seconds=307))
    assert first._shape is second._shape
    for seconds in range(1_000):  # many distances: only the first ones are remembered
        entry = CacheEntry("c", T0, T0 + timedelta(seconds=seconds))
        assert entry.stale_until == T0 + timedelta(seconds=seconds)
    assert len(entries._SHAPES) <= entries._MAX_SHAPES


# -- CachedAccess ---------------------------------------------------------------------------


def _item(access_right_id: str, **fields: object) -> AccessItem:
    return AccessItem(access_right_id, **fields)  # type: ignore[arg-type]


EVERY_FIELD = AccessPayload(
    "100001",
    customer_blocked=False,
    granted=True,
    items=(
        _item(
            "premium",
            granted=True,
            blocked=False,
            lifetime_start=T0 - timedelta(days=30, microseconds=7),
            lifetime_end=(T0 + timedelta(days=30)).astimezone(PLUS_TWO),
            window_start=time(6, 0, 0, 1),
            window_end=time(23, 59, 59, 999_999),
            pause_start=T0 + timedelta(hours=30),
            pause_end=T0 + timedelta(hours=40),
            max_cache_date=T0 + timedelta(seconds=90),
        ),
        _item("archive", granted=False, blocked=True),
        _item("sport", granted=True, window_start=time(22, 0), window_end=time(2, 0)),
        _item("ümlaut-ïd", granted=True, max_cache_date=datetime(1, 1, 1, tzinfo=UTC)),
    ),
    fetched_at=T0,
)

PAYLOADS = [
    pytest.param(EVERY_FIELD, id="every-field"),
    pytest.param(AccessPayload.no_access("100001", T0), id="no-access"),
    pytest.param(AccessPayload("100001", True, False, (), T0), id="customer-blocked"),
    pytest.param(
        AccessPayload("", False, True, (_item("", granted=False),), T0.astimezone(BERLIN)),
        id="empty-ids",
    ),
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_packed_payload_comes_back_equal(payload: AccessPayload) -> None:
    cached = CachedAccess(
        payload, evaluate_access(payload, AccessRule(("premium",)), T0, POLICY), T0
    )
    assert isinstance(cached._payload, bytes)  # it was packed
    back = cached.payload
    assert back == payload
    for kept, given in zip(back.items, payload.items, strict=True):
        for name in AccessItem.__dataclass_fields__:
            value = getattr(kept, name)
            assert value == getattr(given, name), name
            assert type(value) is type(getattr(given, name)), name
    assert back.fetched_at == payload.fetched_at


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            AccessPayload(
                "1", False, True, (_item("p", granted=True, lifetime_end=datetime(2030, 1, 1)),), T0
            ),
            id="naive-instant",
        ),
        pytest.param(
            AccessPayload(
                "1", False, True, (_item("p", granted=True, window_start=time(6, tzinfo=UTC)),), T0
            ),
            id="aware-window-time",
        ),
        pytest.param(
            AccessPayload(
                "1", False, True, (_item("p", granted=True, window_end=time(2, fold=1)),), T0
            ),
            id="window-time-fold",
        ),
        pytest.param(AccessPayload("\ud800", False, True, (), T0), id="unencodable-id"),
        pytest.param(AccessPayload("1", False, True, (), datetime(2025, 1, 1)), id="naive-fetch"),
    ],
)
def test_a_payload_that_cannot_be_packed_exactly_is_kept_as_it_is(payload: AccessPayload) -> None:
    decision = Decision(False, "platform_denied", T0, T0, False)
    assert CachedAccess(payload, decision, T0).payload is payload


def test_a_payload_whose_flag_is_not_a_bool_is_kept_as_it_is_or_cannot_be_made() -> None:
    decision = Decision(False, "platform_denied", T0, T0, False)
    try:
        payload = AccessPayload("1", False, 1, (), T0)  # type: ignore[arg-type]
    except TypeError:
        # The compiled build's __init__ checks its arguments' types: no such payload exists.
        assert "gateway.core.payload" in compiled_modules()
        return
    assert "gateway.core.payload" not in compiled_modules()
    assert CachedAccess(payload, decision, T0).payload is payload


def _window_payload() -> AccessPayload:
    # Open 06:00-18:00 Berlin (04:00-16:00 UTC in June), a pause tomorrow, then the end.
    return AccessPayload(
        "100001",
        False,
        True,
        (
            _item(
                "premium",
                granted=True,
                window_start=time(6, 0),
                window_end=time(18, 0),
                pause_start=T0 + timedelta(hours=20),
                pause_end=T0 + timedelta(hours=22),
                lifetime_end=T0 + timedelta(hours=30),
            ),
            _item("premium", granted=True, lifetime_end=T0 + timedelta(hours=3, seconds=1)),
        ),
        fetched_at=T0,
    )


@pytest.mark.parametrize("require", ["any", "all"])
def _as_tuple(decision: Decision) -> tuple[object, ...]:
    return (
        decision.granted,
        decision.reason,
        decision.valid_until,
        decision.stable_until,
        decision.cacheable,
    )


@pytest.mark.parametrize("require", ["any", "all"])
def test_a_re_evaluation_from_the_packed_payload_decides_as_the_original(require: str) -> None:
    payload = _window_payload()
    rule = AccessRule(("premium",), require)  # type: ignore[arg-type]
    hours = timedelta(hours=40)  # the payload stays valid through every change
    policy = ValidityPolicy(BERLIN, max_ttl=hours, default_ttl=hours, negative_ttl=hours)
    cached = CachedAccess(payload, evaluate_access(payload, rule, T0, policy), T0)
    assert cached.decision is cached  # its own first decision
    changes = 0
    for minutes in range(0, 32 * 60, 7):
        now = T0 + timedelta(minutes=minutes)
        before = cached.decision
        decided = cached.decide(rule, now, policy)
        assert _as_tuple(decided) == _as_tuple(evaluate_access(payload, rule, now, policy)), now
        changes += decided is not before
    assert changes >= 4  # it did re-evaluate (from the packed form) at each change


def test_a_cached_access_is_its_first_decision_until_it_changes() -> None:
    payload = _window_payload()
    rule = AccessRule(("premium",))
    first = evaluate_access(payload, rule, T0, POLICY)
    cached = CachedAccess(payload, first, T0)
    # Every field of the decision, whatever Decision grows (CachedAccess copies them by name).
    for field in dataclasses.fields(Decision):
        assert getattr(cached, field.name) == getattr(first, field.name), field.name
    assert (cached.decision, cached.decided_at) == (cached, T0)
    assert cached.decide(rule, T0 + timedelta(seconds=1), POLICY) is cached
    earlier = T0 - timedelta(seconds=1)
    again = cached.decide(rule, earlier, POLICY)
    assert again is not cached
    assert (cached.decision, cached.decided_at) == (again, earlier)
    # Compared by identity (not as a decision), shown and copied with its payload.
    twin = CachedAccess(payload, first, T0)
    assert twin != CachedAccess(payload, first, T0)
    assert twin == twin
    assert "CachedAccess(AccessPayload(" in repr(cached)
    for back in (copy.copy(cached), pickle.loads(pickle.dumps(cached))):
        assert back.payload == payload
        assert (back.decision.reason, back.decided_at) == (again.reason, earlier)
    with pytest.raises(FrozenInstanceError):
        cached.granted = False  # type: ignore[misc]


# -- MemoryCache ----------------------------------------------------------------------------


def _entry(
    clock: ManualClock, value: object, fresh: float = 60, stale: float = 0
) -> CacheEntry[object]:
    until = clock.now + timedelta(seconds=fresh)
    return CacheEntry(value, until, until + timedelta(seconds=stale))


async def test_lru_order_holds_for_bare_and_generation_tagged_entries(clock: ManualClock) -> None:
    cache: MemoryCache[object] = MemoryCache(4, clock)
    await cache.invalidate_customer("tagged")  # its entries are stored with their generation
    await cache.set("a", _entry(clock, "a"))
    await cache.set("t", _entry(clock, "t"), customer_id="tagged")
    await cache.set("b", _entry(clock, "b"), customer_id="plain")
    await cache.set("c", _entry(clock, "c"))
    assert isinstance(cache._entries["t"], tuple)
    assert isinstance(cache._entries["a"], CacheEntry)
    assert cache.peek("a") is not None  # order now: t b c a
    await cache.set("d", _entry(clock, "d"))  # evicts t
    assert cache.peek("t", customer_id="tagged") is None
    assert cache.peek("b", customer_id="plain") is not None  # order: c a d b
    await cache.set("t", _entry(clock, "t2"), customer_id="tagged")  # evicts c
    assert [key for key in cache._entries] == ["a", "d", "b", "t"]
    found = cache.peek("t", customer_id="tagged")
    assert found is not None
    assert found.value == "t2"


async def test_an_entry_hidden_by_an_invalidation_stays_hidden(clock: ManualClock) -> None:
    cache: MemoryCache[object] = MemoryCache(100, clock)
    owner = sessions_scope("100001")
    await cache.set(
        "s1",
        CacheEntry("100001", clock.now + timedelta(60), clock.now + timedelta(60), owner=owner),
        customer_id="s1",
    )
    await cache.set(
        "s2",
        CacheEntry("100001", clock.now + timedelta(60), clock.now + timedelta(60), owner=owner),
        customer_id="s2",
    )
    await cache.set("x", _entry(clock, "x"), customer_id="c1")
    assert all(isinstance(cache._entries[key], CacheEntry) for key in ("s1", "s2", "x"))
    await cache.invalidate_customer(owner)
    await cache.invalidate_customer("c1")
    for _ in range(2):  # a second lookup does not bring it back
        assert cache.peek("s1", customer_id="s1") is None
        assert await cache.get("s2", customer_id="s2") is None
        assert cache.peek("x", customer_id="c1") is None
    # Unrelated records do not hide anything.
    await cache.set(
        "y",
        CacheEntry(
            "100002",
            clock.now + timedelta(60),
            clock.now + timedelta(60),
            owner=sessions_scope("100002"),
        ),
        customer_id="y",
    )
    assert cache.peek("y", customer_id="y") is not None
    # Stored again after the invalidation: found, under the new generations.
    await cache.set(
        "s1",
        CacheEntry("100001", clock.now + timedelta(60), clock.now + timedelta(60), owner=owner),
        customer_id="s1",
    )
    assert isinstance(cache._entries["s1"], tuple)
    assert cache.peek("s1", customer_id="s1") is not None
    await cache.invalidate_customer(owner)
    assert cache.peek("s1", customer_id="s1") is None


async def test_a_bare_entry_dies_at_its_stale_until(clock: ManualClock) -> None:
    cache: MemoryCache[object] = MemoryCache(100, clock)
    await cache.set("a", _entry(clock, "a", fresh=10, stale=20))
    odd = CacheEntry("b", clock.now + timedelta(seconds=60), clock.now + timedelta(seconds=5))
    await cache.set("b", odd)  # stale_until before fresh_until: gone at stale_until
    assert cache.peek("a", now=clock.now + timedelta(seconds=29)) is not None
    assert cache.peek("a", now=clock.now + timedelta(seconds=30)) is None
    assert cache.peek("b", now=clock.now + timedelta(seconds=4)) is not None
    assert cache.peek("b", now=clock.now + timedelta(seconds=5)) is None
    assert len(cache) == 0
