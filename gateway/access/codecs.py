"""The access service's cache values as JSON-able data, for the shared tier's entries
(:class:`~gateway.store.codec.EntryCodec`): a session's validation (the customer id), and an
access answer, of which only the platform's payload travels (every tier decides again at its
own ``now``). Instants are integer microseconds since the epoch, daily window times seconds of
the day (:mod:`gateway.store.codec`'s helpers).
"""

from __future__ import annotations

from typing import Any

from gateway.access.cached import CachedAccess
from gateway.core.decision import Decision
from gateway.core.payload import AccessItem, AccessPayload
from gateway.store.codec import (
    EPOCH,
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


class CachedAccessCodec:
    """The access cache's values: only the payload travels; the decision is made again here."""

    def __init__(self) -> None:
        self._payloads = PayloadCodec()

    def dump(self, value: CachedAccess) -> Any:
        return self._payloads.dump(value.payload)

    def load(self, data: Any) -> CachedAccess:
        return CachedAccess(self._payloads.load(data), _UNDECIDED, EPOCH)


class CustomerIdCodec:
    """Session validations: the customer id, or None for a session the platform rejected."""

    def dump(self, value: str | None) -> Any:
        return value

    def load(self, data: Any) -> str | None:
        if data is not None and not isinstance(data, str):
            raise CodecError("a customer id must be a string")
        return data
