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

__all__ = ["CachedAccess"]


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
      before its instant), a stale answer and the Redis codec read it; a hit never does.

    The last decision and its instant are read and replaced in one step (``_last``: the first
    decision's instant, later a (decision, instant) tuple): ``decide`` also runs on other
    threads than the loop's (:meth:`AccessService.peek`), and two attributes could be seen
    half-replaced. A race only costs a second evaluation: every caller gets either a decision
    whose stable interval holds its ``now`` or one evaluated at its ``now``.
    """

    __slots__ = ("_last", "_payload")

    _last: datetime | tuple[Decision, datetime]
    _payload: bytes | AccessPayload

    def __init__(self, payload: AccessPayload, decision: Decision, decided_at: datetime) -> None:
        setter = object.__setattr__  # a Decision is frozen
        for name in _DECISION_FIELDS:
            setter(self, name, getattr(decision, name))
        setter(self, "_payload", _pack_payload(payload))
        setter(self, "_last", decided_at)

    @property
    def payload(self) -> AccessPayload:
        """The platform's answer: equal to the one given (its instants rebuilt in UTC)."""
        packed = self._payload
        return _unpack_payload(packed) if isinstance(packed, bytes) else packed

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

    def _plain_decision(self) -> Decision:
        """The last decision as a plain :class:`Decision` (not this object)."""
        decision = self.decision
        return Decision(*(getattr(decision, name) for name in _DECISION_FIELDS))

    def __repr__(self) -> str:
        return f"CachedAccess({self.payload!r}, {self._plain_decision()!r}, {self.decided_at!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (CachedAccess, (self.payload, self._plain_decision(), self.decided_at))


_DECISION_FIELDS = tuple(field.name for field in fields(Decision))


# The packed payload (CachedAccess), only ever in this process's memory: a header, the customer
# id, then per item a header, its id and one signed 64-bit integer per bound it has. Instants
# are microseconds since the epoch (exact; rebuilt in UTC, to which the core converts every
# instant anyway), window times microseconds of the day.
_HEAD = struct.Struct("<BqHH")  # customer_blocked | granted << 1, fetched_at, len(id), items
_ITEM = struct.Struct("<BBH")  # granted | blocked << 1, which bounds are present, len(id)
_BOUND = struct.Struct("<q")
_BOUNDS = (  # AccessItem's optional fields, in its order; True: an instant, False: a time
    ("lifetime_start", True),
    ("lifetime_end", True),
    ("window_start", False),
    ("window_end", False),
    ("pause_start", True),
    ("pause_end", True),
    ("max_cache_date", True),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _flags(first: object, second: object) -> int:
    if type(first) is not bool or type(second) is not bool:
        raise TypeError("not a bool")
    return first | second << 1


def _pack_payload(payload: AccessPayload) -> bytes | AccessPayload:
    """``payload`` packed; itself when packing would lose something (a naive datetime, a
    window time with a time zone or a fold, a flag that is not a bool: nothing the platform
    adapter makes)."""
    try:
        parts = [b""]
        for item in payload.items:
            present = 0
            bounds = []
            for bit, (name, is_instant) in enumerate(_BOUNDS):
                bound = getattr(item, name)
                if bound is None:
                    continue
                present |= 1 << bit
                if is_instant:
                    bounds.append(_BOUND.pack((bound - _EPOCH) // _MICROSECOND))
                elif bound.tzinfo is not None or bound.fold:
                    return payload
                else:
                    seconds = (bound.hour * 60 + bound.minute) * 60 + bound.second
                    bounds.append(_BOUND.pack(seconds * 1_000_000 + bound.microsecond))
            access_right_id = item.access_right_id.encode()
            flags = _flags(item.granted, item.blocked)
            head = _ITEM.pack(flags, present, len(access_right_id))
            parts.append(head + access_right_id + b"".join(bounds))
        customer = payload.customer_id.encode()
        flags = _flags(payload.customer_blocked, payload.granted)
        fetched_at = (payload.fetched_at - _EPOCH) // _MICROSECOND
        parts[0] = _HEAD.pack(flags, fetched_at, len(customer), len(payload.items)) + customer
        return b"".join(parts)
    except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
        return payload  # naive datetimes, out-of-range numbers, not a str: kept as it is


def _unpack_payload(packed: bytes) -> AccessPayload:
    """The :class:`AccessPayload` that :func:`_pack_payload` packed."""
    flags, fetched_at, length, count = _HEAD.unpack_from(packed)
    offset = _HEAD.size + length
    customer_id = packed[_HEAD.size : offset].decode()
    items = []
    for _ in range(count):
        item_flags, present, length = _ITEM.unpack_from(packed, offset)
        offset += _ITEM.size
        access_right_id = packed[offset : offset + length].decode()
        offset += length
        bounds: list[datetime | time | None] = []
        for bit, (_, is_instant) in enumerate(_BOUNDS):
            if not present & (1 << bit):
                bounds.append(None)
                continue
            (number,) = _BOUND.unpack_from(packed, offset)
            offset += _BOUND.size
            if is_instant:
                bounds.append(_EPOCH + number * _MICROSECOND)
            else:
                seconds, microsecond = divmod(number, 1_000_000)
                minutes, second = divmod(seconds, 60)
                hour, minute = divmod(minutes, 60)
                bounds.append(time(hour, minute, second, microsecond))
        granted, blocked = bool(item_flags & 1), bool(item_flags & 2)
        # ``bounds`` is in AccessItem's field order (_BOUNDS), each of its field's type.
        items.append(AccessItem(access_right_id, granted, blocked, *bounds))  # type: ignore[arg-type]
    fetched = _EPOCH + fetched_at * _MICROSECOND
    return AccessPayload(customer_id, bool(flags & 1), bool(flags & 2), tuple(items), fetched)
