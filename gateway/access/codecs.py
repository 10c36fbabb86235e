"""The access service's cache values as JSON-able data, for the shared tier's entries
(:class:`~gateway.store.codec.EntryCodec`): a session's validation (the customer id), and an
access answer, of which only the platform's payload travels (every tier decides again at its
own ``now``). Instants are integer microseconds since the epoch, daily window times seconds of
the day (:mod:`gateway.store.codec`'s helpers).
"""

from __future__ import annotations

from typing import Any

from gateway.access.cached import CachedAccess, RawItem, RawPayload
from gateway.core.decision import Decision
from gateway.core.payload import AccessItem, AccessPayload
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
)

__all__ = ["CachedAccessCodec", "CustomerIdCodec", "PayloadCodec"]


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
    if type(data) is not list or len(data) != 5:
        return None
    customer_id, blocked, granted, fetched_at, items = data
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
    """The access cache's values: only the payload travels; the decision is made again here.

    Both ways go between the JSON data and the payload's packed form
    (:class:`~gateway.access.cached.CachedAccess`) directly, without building an
    :class:`AccessPayload` in between: the same data as :class:`PayloadCodec`'s, number for
    number. Data that is not exactly what ``dump`` writes (another writer's, a corruption) and
    a value whose payload is not kept packed take :class:`PayloadCodec`'s way."""

    def __init__(self) -> None:
        self._payloads = PayloadCodec()

    def dump(self, value: CachedAccess) -> Any:
        raw = value.raw_payload()
        if raw is None:
            return self._payloads.dump(value.payload)
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

    def load(self, data: Any) -> CachedAccess:
        raw = _raw_payload(data)
        if raw is not None:
            loaded = CachedAccess.from_raw_payload(raw, _UNDECIDED, EPOCH)
            if loaded is not None:
                return loaded
        return CachedAccess(self._payloads.load(data), _UNDECIDED, EPOCH)


class CustomerIdCodec:
    """Session validations: the customer id, or None for a session the platform rejected."""

    def dump(self, value: str | None) -> Any:
        return value

    def load(self, data: Any) -> str | None:
        if data is not None and not isinstance(data, str):
            raise CodecError("a customer id must be a string")
        return data
