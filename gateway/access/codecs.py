"""The access service's cache values as JSON-able data, for the shared tier's entries
(:class:`~gateway.store.codec.EntryCodec`): a session's validation (the customer id), and an
access answer: the platform's payload, and the decision its writer made from it. Instants are
integer microseconds since the epoch, daily window times seconds of the day
(:mod:`gateway.store.codec`'s helpers).

The decision travels as a memo, never as a source of truth. A decision is a pure function of
the payload, the rule, the policy and ``now`` (:func:`~gateway.core.decision.evaluate_access`),
and it holds unchanged from its instant to its ``stable_until``; the rule is pinned by the
entry's key (``<customer>:<require>:<sorted ids>``, all the decision depends on), so a reader
whose policy and decision semantics are the writer's (:func:`decision_fingerprint`, written
with the decision) gets, for any ``now`` in that interval, exactly the decision it would make
itself, without unpacking the payload and evaluating it (``CachedAccess.decide``). Outside the
interval, under another policy or version, or when the stored decision is not exactly what
:meth:`CachedAccessCodec.dump` writes, the reader decides from the payload as before.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from gateway.access.cached import CachedAccess, RawItem, RawPayload
from gateway.core.decision import GRANTED, REASONS, Decision
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import ValidityPolicy
from gateway.store.codec import (
    EPOCH,
    FIRST_INSTANT,
    LAST_INSTANT,
    MICROSECOND,
    CodecError,
    from_instant,
    from_seconds_of_day,
    instant,
    seconds_of_day,
    utc_instant,
)

__all__ = ["CachedAccessCodec", "CustomerIdCodec", "PayloadCodec", "decision_fingerprint"]


class PayloadCodec:
    """Access payloads: the platform's answer, so any tier can decide at its own ``now``."""

    def dump(self, value: AccessPayload) -> Any:
        return [
            value.customer_id,
            value.customer_blocked,
            value.granted,
            instant(value.fetched_at),
            [
                [
                    item.access_right_id,
                    item.granted,
                    item.blocked,
                    instant(item.lifetime_start),
                    instant(item.lifetime_end),
                    seconds_of_day(item.window_start),
                    seconds_of_day(item.window_end),
                    instant(item.pause_start),
                    instant(item.pause_end),
                    instant(item.max_cache_date),
                ]
                for item in value.items
            ],
        ]

    def load(self, data: Any) -> AccessPayload:
        customer_id, blocked, granted, fetched_at, items = data
        return AccessPayload(
            customer_id=str(customer_id),
            customer_blocked=bool(blocked),
            granted=bool(granted),
            items=tuple(
                AccessItem(
                    access_right_id=str(item[0]),
                    granted=bool(item[1]),
                    blocked=bool(item[2]),
                    lifetime_start=from_instant(item[3]),
                    lifetime_end=from_instant(item[4]),
                    window_start=from_seconds_of_day(item[5]),
                    window_end=from_seconds_of_day(item[6]),
                    pause_start=from_instant(item[7]),
                    pause_end=from_instant(item[8]),
                    max_cache_date=from_instant(item[9]),
                )
                for item in items
            ),
            fetched_at=EPOCH + int(fetched_at) * MICROSECOND,
        )


# A decision no instant satisfies: a CachedAccess read from another tier decides afresh.
_UNDECIDED = Decision(False, "undecided", EPOCH, EPOCH, cacheable=False)

DECISION_SEMANTICS = 1
"""The version of what :func:`~gateway.core.decision.evaluate_access` answers: raise it with
any change to a decision it makes (a reason, an instant), so that no process uses a decision
stored by a version that decided otherwise."""

# The reasons a stored decision may name, each the one string object of gateway.core.decision.
_REASONS = {reason: reason for reason in REASONS}


def decision_fingerprint(policy: ValidityPolicy) -> str:
    """What a stored decision must have been made under for a reader with ``policy`` to use
    it: the decision semantics (:data:`DECISION_SEMANTICS`) and the policy (its time zone by
    its repr: a zone a repr does not name, say one read from a file, only ever matches itself,
    and a reader then decides on its own)."""
    text = f"{DECISION_SEMANTICS}:{policy!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_DAY = 86_400  # seconds: a window time is 0 <= seconds of the day < _DAY
_SECOND = 1_000_000  # microseconds: window times are packed in microseconds of the day


def _raw_instant(value: object) -> bool:
    """Whether ``value`` is an instant exactly as :meth:`PayloadCodec.dump` writes one."""
    return value is None or (type(value) is int and FIRST_INSTANT <= value <= LAST_INSTANT)


def _raw_window(value: object) -> bool:
    """Whether ``value`` is a window time exactly as :meth:`PayloadCodec.dump` writes one."""
    return value is None or (type(value) is int and 0 <= value < _DAY)


def _raw_payload(data: Any) -> RawPayload | None:
    """``data`` as plain values, if it is exactly what :meth:`CachedAccessCodec.dump` writes
    (every value of the type dump gives it, every number in range), which
    :meth:`PayloadCodec.load` reads without converting anything; None for anything else,
    which :meth:`PayloadCodec.load` reads (or refuses) as it always has."""
    if type(data) is not list or not 5 <= len(data) <= 6:  # (the sixth: a stored decision)
        return None
    customer_id, blocked, granted, fetched_at, items = data[0], data[1], data[2], data[3], data[4]
    if (
        type(customer_id) is not str
        or type(blocked) is not bool
        or type(granted) is not bool
        or fetched_at is None
        or not _raw_instant(fetched_at)
        or type(items) is not list
    ):
        return None
    raw_items: list[RawItem] = []
    for item in items:
        if type(item) is not list or len(item) != 10:
            return None
        (
            access_right_id,
            item_granted,
            item_blocked,
            start,
            end,
            opens,
            closes,
            paused,
            resumed,
            cache,
        ) = item
        if not (
            type(access_right_id) is str
            and type(item_granted) is bool
            and type(item_blocked) is bool
            and _raw_instant(start)
            and _raw_instant(end)
            and _raw_window(opens)
            and _raw_window(closes)
            and _raw_instant(paused)
            and _raw_instant(resumed)
            and _raw_instant(cache)
        ):
            return None
        bounds: list[int | None] = [
            start,
            end,
            None if opens is None else opens * _SECOND,
            None if closes is None else closes * _SECOND,
            paused,
            resumed,
            cache,
        ]
        raw_items.append((access_right_id, item_granted, item_blocked, bounds))
    return customer_id, blocked, granted, fetched_at, raw_items


class CachedAccessCodec:
    """The access cache's values: the payload, and with a ``policy`` the decision made from it
    (module docstring): ``[<the payload's five values>, [fingerprint, granted, reason,
    valid_until, stable_until, cacheable, decided at]]``. Without a ``policy`` only the payload
    is written, and a stored decision is never used.

    Both ways go between the JSON data and the payload's packed form
    (:class:`~gateway.access.cached.CachedAccess`) directly, without building an
    :class:`AccessPayload` in between: the same data as :class:`PayloadCodec`'s, number for
    number. Data that is not exactly what ``dump`` writes (another writer's, a corruption) and
    a value whose payload is not kept packed take :class:`PayloadCodec`'s way."""

    def __init__(self, policy: ValidityPolicy | None = None) -> None:
        self._payloads = PayloadCodec()
        self._fingerprint = None if policy is None else decision_fingerprint(policy)

    def dump(self, value: CachedAccess) -> Any:
        raw = value.raw_payload()
        data: list[Any] = self._payloads.dump(value.payload) if raw is None else _payload_data(raw)
        if self._fingerprint is not None:
            decision = value.decision
            if decision.reason in _REASONS:  # (not a value read without one, still undecided)
                data.append(
                    [
                        self._fingerprint,
                        decision.granted,
                        decision.reason,
                        instant(decision.valid_until),
                        instant(decision.stable_until),
                        decision.cacheable,
                        instant(value.decided_at),
                    ]
                )
        return data

    def load(self, data: Any) -> CachedAccess:
        decision, decided_at = self._decision(data)
        raw = _raw_payload(data)
        if raw is not None:
            loaded = CachedAccess.from_raw_payload(raw, decision, decided_at)
            if loaded is not None:
                return loaded
        if type(data) is list and len(data) == 6:
            data = data[:5]
        return CachedAccess(self._payloads.load(data), decision, decided_at)

    def _decision(self, data: Any) -> tuple[Decision, datetime]:
        """The stored decision and its instant, if it is exactly what :meth:`dump` writes
        under this codec's fingerprint; else one that holds at no instant (decide afresh)."""
        if self._fingerprint is None or type(data) is not list or len(data) != 6:
            return _UNDECIDED, EPOCH
        stored = data[5]
        if type(stored) is not list or len(stored) != 7:
            return _UNDECIDED, EPOCH
        fingerprint, granted, reason, valid_until, stable_until, cacheable, decided_at = stored
        known = _REASONS.get(reason) if type(reason) is str else None
        if (
            fingerprint != self._fingerprint
            or known is None
            or type(granted) is not bool
            or granted != (known == GRANTED)
            or type(cacheable) is not bool
            or type(valid_until) is not int
            or type(stable_until) is not int
            or type(decided_at) is not int
            or not FIRST_INSTANT <= decided_at <= stable_until <= valid_until <= LAST_INSTANT
        ):
            return _UNDECIDED, EPOCH
        decided = EPOCH + decided_at * MICROSECOND
        # Usually one instant: a decision that holds until its payload must be fetched again.
        # Made last, it is remembered for the entry's fresh_until (utc_instant), the same one.
        valid = utc_instant(valid_until)
        stable = valid if stable_until == valid_until else EPOCH + stable_until * MICROSECOND
        return Decision(granted, known, valid, stable, cacheable), decided


def _payload_data(raw: RawPayload) -> list[Any]:
    """:meth:`PayloadCodec.dump`'s data, number for number, from the payload's plain values."""
    customer_id, blocked, granted, fetched_at, items = raw
    return [
        customer_id,
        blocked,
        granted,
        fetched_at,
        [
            [
                access_right_id,
                item_granted,
                item_blocked,
                start,
                end,
                None if opens is None else opens // _SECOND,  # seconds_of_day's
                None if closes is None else closes // _SECOND,
                paused,
                resumed,
                cache,
            ]
            for access_right_id, item_granted, item_blocked, (
                start,
                end,
                opens,
                closes,
                paused,
                resumed,
                cache,
            ) in items
        ],
    ]


class CustomerIdCodec:
    """Session validations: the customer id, or None for a session the platform rejected."""

    def dump(self, value: str | None) -> Any:
        return value

    def load(self, data: Any) -> str | None:
        if data is not None and not isinstance(data, str):
            raise CodecError("a customer id must be a string")
        return data
