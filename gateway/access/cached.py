"""A cached hasAccess answer as the L1 tier keeps it: :class:`CachedAccess`, the platform's
payload with the last decision made from it, built small (an L1 holds one per cached answer).
"""

from __future__ import annotations

import struct
from dataclasses import fields
from datetime import UTC, datetime, time, timedelta

from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy

__all__ = ["CachedAccess", "RawItem", "RawPayload"]


class CachedAccess(Decision):
    """A cached hasAccess answer for one (customer, rule), with the last decision made from it.

    An L1 cache holds one per cached answer, so it is built small:

    * It *is* its first decision (a :class:`Decision` subclass holding that decision's fields),
      which saves the separate object and the tuple pairing it with its instant; ``decide``
      returns the object itself while that decision holds. Compared by identity, not as a
      decision.
    * The payload is kept packed (:func:`_pack_payload`: one bytes object of some 70 bytes for
      a one-item answer instead of some 330 in five to seven objects) and :attr:`payload`
      rebuilds it. Only a re-evaluation (``now`` past the last decision's ``stable_until``, or
      before its instant) and a stale answer read it; a hit never does. The Redis codec goes
      between the packed form and its JSON directly (:meth:`raw_payload`,
      :meth:`from_raw_payload`): the payload's plain numbers, without rebuilding it.

    The last decision and its instant are read and replaced in one step (``_last``: the first
    decision's instant, later a (decision, instant) tuple): ``decide`` also runs on other
    threads than the loop's (:meth:`AccessService.peek`), and two attributes could be seen
    half-replaced. A race only costs a second evaluation: every caller gets either a decision
    whose stable interval holds its ``now`` or one evaluated at its ``now``.
    """

    __slots__ = ("_last", "_payload")

    _last: datetime | tuple[Decision, datetime]
    _payload: bytes | AccessPayload

    def __init__(
        self, payload: AccessPayload | bytes, decision: Decision, decided_at: datetime
    ) -> None:
        """``payload`` as bytes: already packed (only :meth:`from_raw_payload` does that)."""
        # The decision's fields through Decision's own __init__ (a Decision is frozen):
        # compiled, a direct call and a plain store per field, where a loop over the names is a
        # generic getattr and setattr each (and every L2 hit makes one of these).
        super().__init__(
            decision.granted,
            decision.reason,
            decision.valid_until,
            decision.stable_until,
            decision.cacheable,
        )
        packed = payload if isinstance(payload, bytes) else _pack_payload(payload)
        object.__setattr__(self, "_payload", packed)
        object.__setattr__(self, "_last", decided_at)

    @classmethod
    def from_raw_payload(
        cls, raw: RawPayload, decision: Decision, decided_at: datetime
    ) -> CachedAccess | None:
        """``CachedAccess(payload, decision, decided_at)`` for the payload given as plain values
        (:data:`RawPayload`), packed straight from them: the same object, without building the
        payload first. None when they cannot be packed (then build the payload)."""
        try:
            packed = _pack_raw(raw)
        except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
            return None
        # Through __init__, not object.__new__: a compiled class refuses the latter.
        return cls(packed, decision, decided_at)

    @property
    def payload(self) -> AccessPayload:
        """The platform's answer: equal to the one given (its instants rebuilt in UTC)."""
        packed = self._payload
        return _unpack_payload(packed) if isinstance(packed, bytes) else packed

    def raw_payload(self) -> RawPayload | None:
        """The payload as plain values (:data:`RawPayload`), read from the packed form without
        building the payload; None when it is not kept packed (then read :attr:`payload`)."""
        packed = self._payload
        return _read_raw(packed) if isinstance(packed, bytes) else None

    @property
    def decision(self) -> Decision:
        last = self._last
        return last[0] if isinstance(last, tuple) else self

    @property
    def decided_at(self) -> datetime:
        last = self._last
        return last[1] if isinstance(last, tuple) else last

    def decide(self, rule: AccessRule, now: datetime, policy: ValidityPolicy) -> Decision:
        """The decision at ``now``: the remembered one while it provably holds."""
        last = self._last
        if isinstance(last, tuple):
            decision, decided_at = last
        else:
            decision, decided_at = self, last
        if decided_at <= now < decision.stable_until:
            return decision
        decision = evaluate_access(self.payload, rule, now, policy)
        object.__setattr__(self, "_last", (decision, now))
        return decision

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def _decision_fields(self) -> tuple[object, ...]:
        """The last decision's fields, in :class:`Decision`'s order."""
        decision = self.decision
        return tuple(getattr(decision, name) for name in _DECISION_FIELDS)

    def __repr__(self) -> str:
        decision = Decision(*self._decision_fields())  # type: ignore[arg-type]
        return f"CachedAccess({self.payload!r}, {decision!r}, {self.decided_at!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # The decision as its fields: a compiled Decision (gateway/compiled.py) is a frozen
        # dataclass that copy and pickle cannot rebuild by setting attributes.
        return (_rebuilt, (self.payload, self._decision_fields(), self.decided_at))


def _rebuilt(
    payload: AccessPayload, decision: tuple[object, ...], decided_at: datetime
) -> CachedAccess:
    """A pickled or copied :class:`CachedAccess` (its ``__reduce__``)."""
    return CachedAccess(payload, Decision(*decision), decided_at)  # type: ignore[arg-type]


_DECISION_FIELDS = tuple(field.name for field in fields(Decision))


# The packed payload (CachedAccess), only ever in this process's memory: a header, the customer
# id, then per item a header, its id and one signed 64-bit integer per bound it has. Instants
# are microseconds since the epoch (exact; rebuilt in UTC, to which the core converts every
# instant anyway), window times microseconds of the day.
_HEAD = struct.Struct("<BqHH")  # customer_blocked | granted << 1, fetched_at, len(id), items
_ITEM = struct.Struct("<BBH")  # granted | blocked << 1, which bounds are present, len(id)
_BOUNDS = (  # AccessItem's optional fields, in its order; True: an instant, False: a time
    ("lifetime_start", True),
    ("lifetime_end", True),
    ("window_start", False),
    ("window_end", False),
    ("pause_start", True),
    ("pause_end", True),
    ("max_cache_date", True),
)
# The bounds an item has, packed one after the other: one struct per how many.
_BOUND_RUNS = tuple(struct.Struct(f"<{count}q") for count in range(len(_BOUNDS) + 1))
# The bound positions (in _BOUNDS) that the bits of an item's "present" byte name.
_PRESENT = tuple(
    tuple(bit for bit in range(len(_BOUNDS)) if present & (1 << bit)) for present in range(256)
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

RawItem = tuple[str, bool, bool, list[int | None]]
"""An item as plain values: access_right_id, granted, blocked, and its seven bounds in
AccessItem's order (:data:`_BOUNDS`), instants as microseconds since the epoch, window times
as microseconds of the day, None where absent."""

RawPayload = tuple[str, bool, bool, int, list[RawItem]]
"""A payload as plain values: customer_id, customer_blocked, granted, fetched_at (microseconds
since the epoch) and its items (:data:`RawItem`). What the packed form holds, read or written
without building an :class:`AccessPayload` (the Redis codec's values are the same numbers)."""


def _flags(first: object, second: object) -> int:
    if type(first) is not bool or type(second) is not bool:
        raise TypeError("not a bool")
    return first | second << 1


def _pack_raw(raw: RawPayload) -> bytes:
    """The packed form of ``raw``; raises (TypeError, ValueError, OverflowError, struct.error)
    for what it cannot hold: a flag that is not a bool, an id that is not a str (or not
    encodable), a number beyond 64 bits, an id or item count beyond 65535."""
    customer_id, customer_blocked, granted, fetched_at, items = raw
    customer = customer_id.encode()
    flags = _flags(customer_blocked, granted)
    parts = [_HEAD.pack(flags, fetched_at, len(customer), len(items)) + customer]
    for access_right_id, item_granted, item_blocked, bounds in items:
        present = 0
        values = []
        for bit, bound in enumerate(bounds):
            if bound is not None:
                present |= 1 << bit
                values.append(bound)
        encoded = access_right_id.encode()
        head = _ITEM.pack(_flags(item_granted, item_blocked), present, len(encoded))
        parts.append(head + encoded + _BOUND_RUNS[len(values)].pack(*values))
    return b"".join(parts)


def _pack_payload(payload: AccessPayload) -> bytes | AccessPayload:
    """``payload`` packed; itself when packing would lose something (a naive datetime, a
    window time with a time zone or a fold, a flag that is not a bool: nothing the platform
    adapter makes)."""
    try:
        items: list[RawItem] = []
        for item in payload.items:
            bounds: list[int | None] = []
            for name, is_instant in _BOUNDS:
                bound = getattr(item, name)
                if bound is None:
                    bounds.append(None)
                elif is_instant:
                    bounds.append((bound - _EPOCH) // _MICROSECOND)
                elif bound.tzinfo is not None or bound.fold:
                    return payload
                else:
                    seconds = (bound.hour * 60 + bound.minute) * 60 + bound.second
                    bounds.append(seconds * 1_000_000 + bound.microsecond)
            items.append((item.access_right_id, item.granted, item.blocked, bounds))
        fetched_at = (payload.fetched_at - _EPOCH) // _MICROSECOND
        return _pack_raw(
            (payload.customer_id, payload.customer_blocked, payload.granted, fetched_at, items)
        )
    except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
        return payload  # naive datetimes, out-of-range numbers, not a str: kept as it is


_Walked = tuple[str, int, int, list[tuple[str, int, tuple[int, ...], tuple[int, ...]]]]


def _walk(packed: bytes) -> _Walked:
    """What :func:`_pack_raw` packed, as it lies: the customer id, the flags, fetched_at, and
    per item its id, its flags, the positions (in :data:`_BOUNDS`) of the bounds it has and
    their numbers."""
    flags, fetched_at, length, count = _HEAD.unpack_from(packed)
    offset = _HEAD.size + length
    customer_id = packed[_HEAD.size : offset].decode()
    items = []
    for _ in range(count):
        item_flags, present, length = _ITEM.unpack_from(packed, offset)
        offset += _ITEM.size
        access_right_id = packed[offset : offset + length].decode()
        offset += length
        slots = _PRESENT[present]
        run = _BOUND_RUNS[len(slots)]
        items.append((access_right_id, item_flags, slots, run.unpack_from(packed, offset)))
        offset += run.size
    return customer_id, flags, fetched_at, items


def _read_raw(packed: bytes) -> RawPayload:
    """The plain values that :func:`_pack_raw` packed."""
    customer_id, flags, fetched_at, walked = _walk(packed)
    items: list[RawItem] = []
    for access_right_id, item_flags, slots, numbers in walked:
        bounds: list[int | None] = [None, None, None, None, None, None, None]
        for slot, number in zip(slots, numbers, strict=True):
            bounds[slot] = number
        items.append((access_right_id, item_flags & 1 == 1, item_flags & 2 == 2, bounds))
    return customer_id, flags & 1 == 1, flags & 2 == 2, fetched_at, items


def _time_of_day(value: int) -> time:
    seconds, microsecond = divmod(value, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, microsecond)


def _unpack_payload(packed: bytes) -> AccessPayload:
    """The :class:`AccessPayload` that :func:`_pack_payload` packed."""
    customer_id, flags, fetched_at, walked = _walk(packed)
    epoch, microsecond = _EPOCH, _MICROSECOND
    items = []
    for access_right_id, item_flags, slots, numbers in walked:
        bounds: list[datetime | time | None] = [None, None, None, None, None, None, None]
        for slot, number in zip(slots, numbers, strict=True):
            # Slots 2 and 3 are the window times (_BOUNDS), the others instants.
            bounds[slot] = _time_of_day(number) if 2 <= slot <= 3 else epoch + number * microsecond
        # ``bounds`` is in AccessItem's field order (_BOUNDS), each of its field's type.
        items.append(
            AccessItem(access_right_id, item_flags & 1 == 1, item_flags & 2 == 2, *bounds)  # type: ignore[arg-type]
        )
    fetched = epoch + fetched_at * microsecond
    return AccessPayload(customer_id, flags & 1 == 1, flags & 2 == 2, tuple(items), fetched)
