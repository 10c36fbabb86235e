"""The access cache's Redis codec goes straight between JSON and the packed payload
(gateway/access/codecs.py, gateway/access/cached.py): it must write the very bytes, and read
the very values, that the way through an AccessPayload wrote and read."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.access import cached as cached_module
from gateway.access.cached import CachedAccess
from gateway.access.codecs import _UNDECIDED, CachedAccessCodec, PayloadCodec, _raw_payload
from gateway.config import Settings
from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule
from gateway.store.cache import CacheEntry
from gateway.store.codec import EPOCH, CodecError, EntryCodec
from tests.service.conftest import T0

BERLIN = ZoneInfo("Europe/Berlin")
PLUS_TWO = timezone(timedelta(hours=2))
POLICY = Settings().access.validity_policy()
RULE = AccessRule(("premium",))
FIRST = datetime.min.replace(tzinfo=UTC)
LAST = datetime.max.replace(tzinfo=UTC)


class UnpackThenDump:
    """How an L2 write made its data before: the payload rebuilt, then PayloadCodec's dump."""

    def dump(self, value: CachedAccess) -> Any:
        return PayloadCodec().dump(value.payload)

    def load(self, data: Any) -> CachedAccess:
        return CachedAccess(PayloadCodec().load(data), _UNDECIDED, EPOCH)


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
            window_start=time(6, 0, 0, 1),  # the microsecond does not travel (seconds of day)
            window_end=time(23, 59, 59, 999_999),
            pause_start=T0 + timedelta(hours=30),
            pause_end=T0 + timedelta(hours=40),
            max_cache_date=T0 + timedelta(seconds=90),
        ),
        _item("archive", granted=False, blocked=True),
        _item("sport", granted=True, window_start=time(22, 0), window_end=time(2, 0)),
        _item("ümlaut-ïd", granted=True, max_cache_date=FIRST),
        _item("edge", granted=True, lifetime_end=LAST, window_start=time(0), window_end=time(0)),
    ),
    fetched_at=T0 + timedelta(microseconds=7),
)

# Representative values: what the platform adapter makes, and what packing keeps unpacked.
VALUES = [
    pytest.param(EVERY_FIELD, True, id="every-field"),
    pytest.param(
        AccessPayload("100001", False, True, (_item("premium", granted=True),), T0),
        True,
        id="one-unlimited-item",
    ),
    pytest.param(AccessPayload.no_access("100001", T0), True, id="no-access"),
    pytest.param(AccessPayload("100001", True, False, (), T0), True, id="customer-blocked"),
    pytest.param(
        AccessPayload("", False, True, (_item("", granted=False),), T0.astimezone(BERLIN)),
        True,
        id="empty-ids-fetched-in-berlin",
    ),
    pytest.param(
        AccessPayload("1", False, True, (_item("p", granted=True, window_start=time(6)),), FIRST),
        True,
        id="fetched-at-the-first-instant",
    ),
    pytest.param(
        AccessPayload(
            "1", False, True, (_item("p", granted=True, window_start=time(6, tzinfo=UTC)),), T0
        ),
        False,
        id="unpacked-aware-window-time",
    ),
    pytest.param(
        AccessPayload(
            "1", False, True, (_item("p", granted=True, window_end=time(2, fold=1)),), T0
        ),
        False,
        id="unpacked-window-time-fold",
    ),
]


def _cached(payload: AccessPayload) -> CachedAccess:
    return CachedAccess(payload, evaluate_access(payload, RULE, T0, POLICY), T0)


@pytest.mark.parametrize(("payload", "packed"), VALUES)
def test_an_l2_write_is_byte_for_byte_what_unpack_then_dump_wrote(
    payload: AccessPayload, packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = _cached(payload)
    assert isinstance(value._payload, bytes) is packed
    fresh, stale = T0 + timedelta(seconds=60), T0 + timedelta(seconds=360)
    for owner in (None, "sessions-of:100001"):
        entry = CacheEntry(value, fresh, stale, owner=owner)
        before = EntryCodec(UnpackThenDump()).encode(entry, 7)
        # (the reference is what it claims to be: the given payload's data)
        assert before == EntryCodec(PayloadCodec()).encode(
            CacheEntry(payload, fresh, stale, owner=owner), 7
        )
        with monkeypatch.context() as patch:
            if packed:  # written from the packed form: the payload is never rebuilt
                patch.setattr(cached_module, "_unpack_payload", _never)
            assert EntryCodec(CachedAccessCodec()).encode(entry, 7) == before


def _never(packed: bytes) -> AccessPayload:
    raise AssertionError("the payload was unpacked")


@pytest.mark.parametrize(("payload", "packed"), VALUES)
def test_a_value_read_from_l2_is_written_again_unchanged(
    payload: AccessPayload, packed: bool
) -> None:
    codec = CachedAccessCodec()
    data = orjson.loads(orjson.dumps(codec.dump(_cached(payload))))
    back = codec.load(data)
    assert isinstance(back._payload, bytes)  # JSON's values always pack
    assert orjson.dumps(codec.dump(back)) == orjson.dumps(data)
    assert back.payload == UnpackThenDump().load(data).payload
    later = T0 + timedelta(seconds=30)
    assert back.decide(RULE, later, POLICY) == evaluate_access(back.payload, RULE, later, POLICY)


# -- reading: straight into the packed form, or PayloadCodec's way ---------------------------

_INSTANTS = st.one_of(
    st.none(),
    st.integers(min_value=(FIRST - EPOCH) // timedelta(microseconds=1), max_value=-1),
    st.integers(min_value=0, max_value=(LAST - EPOCH) // timedelta(microseconds=1)),
    st.sampled_from([(FIRST - EPOCH) // timedelta(microseconds=1), 0, 1_749_636_000_000_000]),
)
_WINDOWS = st.one_of(st.none(), st.integers(min_value=0, max_value=86_399))
_IDS = st.text(max_size=12)
_ITEMS = st.lists(
    st.tuples(_IDS, st.booleans(), st.booleans(), _INSTANTS, _INSTANTS, _WINDOWS, _WINDOWS).flatmap(
        lambda head: st.tuples(_INSTANTS, _INSTANTS, _INSTANTS).map(lambda tail: [*head, *tail])
    ),
    max_size=4,
)
_DATA = st.tuples(
    _IDS, st.booleans(), st.booleans(), _INSTANTS.filter(lambda v: v is not None), _ITEMS
).map(list)


@given(_DATA)
def test_what_dump_writes_is_packed_straight_as_the_payload_way_packed_it(data: Any) -> None:
    data = orjson.loads(orjson.dumps(data))  # as Redis gives it back
    assert _raw_payload(data) is not None
    fast = CachedAccessCodec().load(data)
    slow = UnpackThenDump().load(data)
    assert isinstance(fast._payload, bytes)
    assert fast._payload == slow._payload
    assert fast.decision is fast
    assert fast.decided_at == slow.decided_at == EPOCH
    assert _fields(fast) == _fields(slow)
    assert orjson.dumps(CachedAccessCodec().dump(fast)) == orjson.dumps(data)


def _fields(value: Decision) -> tuple[object, ...]:
    return (value.granted, value.reason, value.valid_until, value.stable_until, value.cacheable)


_ITEM = ["p", True, False, 0, None, 3600, None, None, None, 5]
# Data that is not exactly what dump writes: PayloadCodec.load decides, as before, whether
# and how it reads.
ODD = [
    pytest.param([*["1", False, True, 0], [[*_ITEM[:3], True, *_ITEM[4:]]]], id="bool-instant"),
    pytest.param([*["1", False, True, 0], [[*_ITEM[:5], False, *_ITEM[6:]]]], id="bool-window"),
    pytest.param(["1", False, True, 0.5, [_ITEM]], id="float-fetched-at"),
    pytest.param(["1", False, True, "12", [_ITEM]], id="string-fetched-at"),
    pytest.param(["1", False, True, True, [_ITEM]], id="bool-fetched-at"),
    pytest.param(["1", False, True, None, [_ITEM]], id="no-fetched-at"),
    pytest.param([1, False, True, 0, [_ITEM]], id="number-customer-id"),
    pytest.param(["1", 0, 1, 0, [_ITEM]], id="numbers-for-flags"),
    pytest.param(["1", False, True, 0, [[*_ITEM, "extra"]]], id="eleven-fields"),
    pytest.param(["1", False, True, 0, [_ITEM[:9]]], id="nine-fields"),
    pytest.param(["1", False, True, 0, [[*_ITEM[:5], 86_400, *_ITEM[6:]]]], id="window-86400"),
    pytest.param(["1", False, True, 0, [[*_ITEM[:5], -1, *_ITEM[6:]]]], id="window-negative"),
    pytest.param(["1", False, True, 0, [[*_ITEM[:5], 60.0, *_ITEM[6:]]]], id="window-float"),
    pytest.param(["1", False, True, 2**62, [_ITEM]], id="instant-beyond-datetime"),
    pytest.param(["1", False, True, -(2**62), [_ITEM]], id="instant-before-datetime"),
    pytest.param(["1", False, True, 0, [[*_ITEM[:3], 2**62, *_ITEM[4:]]]], id="bound-beyond"),
    pytest.param(["1", False, True, 0, [[1, *_ITEM[1:]]]], id="number-item-id"),
    pytest.param(["1", False, True, 0, [[*_ITEM[:1], 1, *_ITEM[2:]]]], id="number-item-flag"),
    pytest.param(["1", False, True, 0, ["abcdefghij"]], id="string-item"),
    pytest.param(["1", False, True, 0, "ab"], id="string-items"),
    pytest.param(["1", False, True, 0], id="four-fields"),
    pytest.param({"a": 1, "b": 2, "c": 3, "12": 4, "": 5}, id="an-object"),
    pytest.param("abcde", id="a-string"),
]
# Data exactly as dump writes it, but more than the packed form holds: kept unpacked, as before.
UNPACKABLE = [
    pytest.param(["x" * 65_536, False, True, 0, []], id="customer-id-too-long"),
    pytest.param(["1", False, True, 0, [["x" * 65_536, *_ITEM[1:]]]], id="item-id-too-long"),
    pytest.param(["1", False, True, 0, [_ITEM] * 65_536], id="too-many-items"),
]


def _outcome(load: Any, data: Any) -> tuple[str, object]:
    try:
        value = load(data)
    except Exception as exc:  # the kind of failure is what is compared
        return "raised", type(exc)
    packed = value._payload
    return "loaded", (packed if isinstance(packed, bytes) else None, value.payload)


@pytest.mark.parametrize("data", ODD)
def test_what_dump_does_not_write_is_read_the_payload_way(data: Any) -> None:
    assert _raw_payload(data) is None
    assert _outcome(CachedAccessCodec().load, data) == _outcome(UnpackThenDump().load, data)


@pytest.mark.parametrize("data", UNPACKABLE)
def test_what_the_packed_form_cannot_hold_is_kept_unpacked_as_before(data: Any) -> None:
    assert _raw_payload(data) is not None
    loaded = CachedAccessCodec().load(data)
    assert not isinstance(loaded._payload, bytes)
    assert _outcome(CachedAccessCodec().load, data) == _outcome(UnpackThenDump().load, data)


@pytest.mark.parametrize(
    "raw",
    [
        b'[1, 0, 0, ["1", false, true, 0, [["p", true, false, 86400, null]]]]',
        b'[1, 0, 0, ["1", false, true, 0, [["p", true, false, 0, null, 86400]]]]',
        b'[1, 0, 0, ["1", false, true, 253402300800000000, []]]',
        b'[1, 0, 0, ["1", false, true, 0, [["p", true, false, 0, null, -1, 0, 0, 0, 0]]]]',
    ],
)
def test_unreadable_access_entries_are_still_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        EntryCodec(CachedAccessCodec()).decode(raw)


# -- the decision that travels with the payload ----------------------------------------------

OTHER_POLICY = Settings(access={"time_zone": "America/New_York"}).access.validity_policy()
_SECOND = timedelta(seconds=1)
_RULES = st.sampled_from(
    [
        AccessRule(("premium",)),
        AccessRule(("premium", "sport")),
        AccessRule(("premium", "sport"), "all"),
    ]
)
# Payloads whose items the rules ask for, with bounds within minutes of T0 (12:00 in Berlin,
# the policy's zone), so that windows, lifetimes and pauses open and close within a decision's
# reach (max_ttl: 5 minutes).
_NEAR = st.one_of(st.none(), st.integers(-120, 120).map(lambda s: T0 + s * _SECOND))
_TIMES = st.one_of(
    st.none(),
    st.integers(11 * 3600 + 58 * 60, 12 * 3600 + 2 * 60).map(
        lambda s: time(s // 3600, s // 60 % 60, s % 60)
    ),
)
_MOSTLY = st.sampled_from([True, True, True, False])  # grants, which can close on their own
_DECIDED_ITEMS = st.lists(
    st.builds(
        AccessItem,
        access_right_id=st.sampled_from(["premium", "sport"]),
        granted=_MOSTLY,
        blocked=_MOSTLY.map(lambda granted: not granted),
        lifetime_start=_NEAR,
        lifetime_end=_NEAR,
        window_start=_TIMES,
        window_end=_TIMES,
        pause_start=_NEAR,
        pause_end=_NEAR,
        max_cache_date=st.one_of(st.none(), st.integers(-10, 300).map(lambda s: T0 + s * _SECOND)),
    ),
    max_size=3,
)
_PAYLOADS = st.builds(
    lambda granted, items: AccessPayload("100001", not granted, granted, tuple(items), T0),
    _MOSTLY,
    _DECIDED_ITEMS,
)


def _stored(value: CachedAccess, policy: Any = POLICY) -> Any:
    """What the writer's codec puts in Redis for ``value``, as Redis gives it back."""
    return orjson.loads(orjson.dumps(CachedAccessCodec(policy).dump(value)))


@settings(max_examples=500)  # about one in eighty is a grant that closes before it expires
@given(_PAYLOADS, _RULES, st.integers(0, 8), st.integers(0, 400))
def test_a_stored_decision_answers_as_the_reader_would_decide_at_any_now(
    payload: AccessPayload, rule: AccessRule, decided: int, later: int
) -> None:
    decided_at = T0 + decided * _SECOND
    first = evaluate_access(payload, rule, decided_at, POLICY)
    data = _stored(CachedAccess(payload, first, decided_at))
    assert len(data) == 6
    loaded = CachedAccessCodec(POLICY).load(data)
    if decided_at <= first.stable_until <= first.valid_until:  # (decided while valid)
        assert _fields(loaded) == _fields(first)
        assert loaded.decided_at == decided_at
    else:  # expired when decided: its stable interval is empty, it is not even read
        assert loaded.reason == "undecided"
    now = decided_at + later * _SECOND
    decision = loaded.decide(rule, now, POLICY)
    own = evaluate_access(loaded.payload, rule, now, POLICY)
    assert _fields(decision) == _fields(own)
    if now < first.stable_until:
        assert decision is loaded  # the stored decision itself, not evaluated again


@pytest.mark.parametrize(("payload", "packed"), VALUES)
def test_a_stored_decision_is_used_only_inside_its_interval(
    payload: AccessPayload, packed: bool
) -> None:
    # An evaluation makes a new Decision and remembers its instant (decided_at): the stored
    # decision is the loaded value itself, at the writer's instant.
    first = evaluate_access(payload, RULE, T0, POLICY)
    loaded = CachedAccessCodec(POLICY).load(_stored(CachedAccess(payload, first, T0)))
    assert isinstance(loaded._payload, bytes)  # JSON's values always pack
    inside = [] if first.stable_until <= T0 else [T0, first.stable_until - _SECOND / 10**6]
    for now in inside:
        assert loaded.decide(RULE, now, POLICY) is loaded
        assert loaded.decided_at == T0
    before = T0 - timedelta(microseconds=1)  # a reader whose clock is behind the writer's
    decision = loaded.decide(RULE, before, POLICY)
    assert decision is not loaded
    assert loaded.decided_at == before
    assert _fields(decision) == _fields(evaluate_access(loaded.payload, RULE, before, POLICY))


def test_a_reader_under_another_policy_or_without_one_decides_on_its_own() -> None:
    payload = EVERY_FIELD
    data = _stored(_cached(payload))
    other = CachedAccessCodec(OTHER_POLICY).load(data)
    assert other.decided_at == EPOCH
    assert other.reason == "undecided"
    decision = other.decide(RULE, T0, OTHER_POLICY)
    assert decision is not other
    assert other.decided_at == T0
    assert _fields(decision) == _fields(evaluate_access(other.payload, RULE, T0, OTHER_POLICY))
    plain = CachedAccessCodec().load(data)
    assert plain.decided_at == EPOCH
    assert plain.reason == "undecided"
    assert plain.payload == other.payload == CachedAccessCodec(POLICY).load(data).payload
    # Without a policy nothing but the payload is written.
    assert CachedAccessCodec().dump(_cached(payload)) == data[:5]


def test_a_value_read_without_a_decision_is_written_without_one() -> None:
    data = _stored(_cached(EVERY_FIELD), None)
    assert len(data) == 5
    undecided = CachedAccessCodec(POLICY).load(data)
    assert undecided.reason == "undecided"
    assert CachedAccessCodec(POLICY).dump(undecided) == data
    undecided.decide(RULE, T0, POLICY)  # decided here now: that decision travels
    assert CachedAccessCodec(POLICY).dump(undecided)[5][6] == (T0 - EPOCH) // timedelta(
        microseconds=1
    )


def _spoiled(position: int, value: object) -> Any:
    data = _stored(_cached(EVERY_FIELD))
    data[5][position] = value
    return data


_GOOD = _stored(_cached(EVERY_FIELD))[5]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_spoiled(0, "0" * 16), id="another-fingerprint"),
        pytest.param(_spoiled(1, not _GOOD[1]), id="granted-against-its-reason"),
        pytest.param(_spoiled(1, 1), id="number-for-granted"),
        pytest.param(_spoiled(2, "undecided"), id="unknown-reason"),
        pytest.param(_spoiled(2, "granted\r\nX-Paywall: 1"), id="reason-with-a-header"),
        pytest.param(_spoiled(3, _GOOD[4] - 1), id="valid-before-stable"),
        pytest.param(_spoiled(4, _GOOD[6] - 1), id="stable-before-decided"),
        pytest.param(_spoiled(3, 2**62), id="valid-beyond-datetime"),
        pytest.param(_spoiled(6, -(2**62)), id="decided-before-datetime"),
        pytest.param(_spoiled(4, float(_GOOD[4])), id="float-instant"),
        pytest.param(_spoiled(5, None), id="no-cacheable"),
        pytest.param([*_stored(_cached(EVERY_FIELD))[:5], _GOOD[:6]], id="six-fields"),
        pytest.param([*_stored(_cached(EVERY_FIELD))[:5], "granted"], id="a-string"),
        pytest.param([*_stored(_cached(EVERY_FIELD))[:5], None], id="null"),
    ],
)
def test_a_stored_decision_not_exactly_as_written_is_ignored(data: Any) -> None:
    loaded = CachedAccessCodec(POLICY).load(data)
    assert loaded.reason == "undecided"
    assert loaded.decided_at == EPOCH
    assert loaded.payload == CachedAccessCodec(POLICY).load(data[:5]).payload


def test_a_whole_entry_carries_its_decision_through_bytes() -> None:
    codec = EntryCodec(CachedAccessCodec(POLICY))
    value = _cached(EVERY_FIELD)
    fresh = value.valid_until
    raw = codec.encode(CacheEntry(value, fresh, fresh + timedelta(seconds=300)))
    entry, _ = codec.decode_owned(raw, "l2")
    assert _fields(entry.value) == _fields(value)
    assert entry.value.decided_at == T0
    assert entry.value.decide(RULE, T0, POLICY) is entry.value
