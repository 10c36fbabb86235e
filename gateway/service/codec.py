"""Compact bytes for cache entries that leave the process (the Redis tier).

An entry is stored with its absolute ``fresh_until`` / ``stale_until`` and, for access answers,
the platform's payload itself (with ``fetched_at``): every tier re-evaluates windows, pauses and
lifetimes locally at *its* ``now`` instead of trusting a decision made elsewhere. Instants are
integer microseconds since the epoch (exact, unlike float seconds); daily window times are
seconds of the day. orjson keeps it small and fast.

A value that cannot be decoded (another version wrote it, or it is corrupt) is a
:class:`CodecError`; the tier treats it as a miss.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any, Generic, Protocol, TypeVar

import orjson

from gateway.core.decision import Decision
from gateway.core.payload import AccessItem, AccessPayload
from gateway.service.access import CachedAccess
from gateway.service.cache import CacheEntry

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class CodecError(ValueError):
    """Stored bytes that are not an entry this version can read."""


class ValueCodec(Protocol[T]):
    """Turns one cache's values into JSON-able data and back."""

    def dump(self, value: T) -> Any: ...

    def load(self, data: Any) -> T: ...


def _instant(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _from_instant(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MICROSECOND


def _seconds_of_day(value: time | None) -> int | None:
    return None if value is None else value.hour * 3600 + value.minute * 60 + value.second


def _from_seconds_of_day(value: int | None) -> time | None:
    if value is None:
        return None
    hours, rest = divmod(value, 3600)
    return time(hours, *divmod(rest, 60))


class PayloadCodec:
    """Access payloads: the platform's answer, so any tier can decide at its own ``now``."""

    def dump(self, value: AccessPayload) -> Any:
        return [
            value.customer_id,
            value.customer_blocked,
            value.granted,
            _instant(value.fetched_at),
            [
                [
                    item.access_right_id,
                    item.granted,
                    item.blocked,
                    _instant(item.lifetime_start),
                    _instant(item.lifetime_end),
                    _seconds_of_day(item.window_start),
                    _seconds_of_day(item.window_end),
                    _instant(item.pause_start),
                    _instant(item.pause_end),
                    _instant(item.max_cache_date),
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
                    lifetime_start=_from_instant(item[3]),
                    lifetime_end=_from_instant(item[4]),
                    window_start=_from_seconds_of_day(item[5]),
                    window_end=_from_seconds_of_day(item[6]),
                    pause_start=_from_instant(item[7]),
                    pause_end=_from_instant(item[8]),
                    max_cache_date=_from_instant(item[9]),
                )
                for item in items
            ),
            fetched_at=_EPOCH + int(fetched_at) * _MICROSECOND,
        )


# A decision no instant satisfies: a CachedAccess read from another tier decides afresh.
_UNDECIDED = Decision(False, "undecided", _EPOCH, _EPOCH, cacheable=False)


class CachedAccessCodec:
    """The access cache's values: only the payload travels; the decision is made again here."""

    def __init__(self) -> None:
        self._payloads = PayloadCodec()

    def dump(self, value: CachedAccess) -> Any:
        return self._payloads.dump(value.payload)

    def load(self, data: Any) -> CachedAccess:
        return CachedAccess(self._payloads.load(data), _UNDECIDED, _EPOCH)


class CustomerIdCodec:
    """Session validations: the customer id, or None for a session the platform rejected."""

    def dump(self, value: str | None) -> Any:
        return value

    def load(self, data: Any) -> str | None:
        if data is not None and not isinstance(data, str):
            raise CodecError("a customer id must be a string")
        return data


class EntryCodec(Generic[T]):
    """A whole :class:`CacheEntry`: format version, the two instants, the value, and for an
    entry with an owner (:attr:`CacheEntry.owner`) a fifth element ``[owner, generation]``: the
    owner's generation when the entry was stored. (A reader that only knows four elements
    treats such an entry as unreadable: a miss, never a hit that skips the owner check.)"""

    VERSION = 1

    def __init__(self, values: ValueCodec[T]) -> None:
        self._values = values

    def encode(self, entry: CacheEntry[T], owner_generation: int = 0) -> bytes:
        data: list[Any] = [
            self.VERSION,
            _instant(entry.fresh_until),
            _instant(entry.stale_until),
            self._values.dump(entry.value),
        ]
        if entry.owner is not None:
            data.append([entry.owner, owner_generation])
        return orjson.dumps(data)

    def decode(self, raw: bytes) -> CacheEntry[T]:
        return self.decode_owned(raw)[0]

    def decode_owned(self, raw: bytes, tier: str = "l1") -> tuple[CacheEntry[T], int]:
        """The entry (marked as answered by ``tier``) and its owner's generation when it was
        stored (0 without an owner)."""
        try:
            data = orjson.loads(raw)
            owner: str | None = None
            owner_generation = 0
            if isinstance(data, list) and len(data) == 5:
                owner, owner_generation = data.pop()
                if not isinstance(owner, str) or type(owner_generation) is not int:
                    raise CodecError("an entry's owner is [name, generation]")
            version, fresh_until, stale_until, value = data
            if version != self.VERSION:
                raise CodecError(f"entry format {version!r}, expected {self.VERSION}")
            entry = CacheEntry(
                self._values.load(value),
                _EPOCH + int(fresh_until) * _MICROSECOND,
                _EPOCH + int(stale_until) * _MICROSECOND,
                tier,
                owner,
            )
            return entry, owner_generation
        except CodecError:
            raise
        except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise CodecError(f"unreadable cache entry: {exc}") from None
