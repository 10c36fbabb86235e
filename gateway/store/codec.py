"""Compact bytes for cache entries that leave the process (the Redis tier).

An entry is stored with its absolute ``fresh_until`` / ``stale_until`` and its value, which a
:class:`ValueCodec` of the cache's owner turns into JSON-able data (the access service's:
:mod:`gateway.access.codecs`; for access answers the platform's payload itself, so every tier
can evaluate windows, pauses and lifetimes locally at *its* ``now``, and the decision its writer
made, which a reader uses only where it equals its own). Instants are integer microseconds
since the epoch (exact, unlike float seconds: :func:`instant`); daily window times are seconds
of the day. orjson keeps it small and fast.

A value that cannot be decoded (another version wrote it, or it is corrupt) is a
:class:`CodecError`; the tier treats it as a miss.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any, Generic, Protocol, TypeVar

import orjson

from gateway.store.cache import CacheEntry
from gateway.store.entries import utc_entry

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

FIRST_INSTANT = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
LAST_INSTANT = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
"""The instants a datetime can hold, ``FIRST_INSTANT`` to ``LAST_INSTANT``: in microseconds since
the epoch (what :func:`from_instant` accepts)."""


class CodecError(ValueError):
    """Stored bytes that are not an entry this version can read."""


class ValueCodec(Protocol[T]):
    """Turns one cache's values into JSON-able data and back."""

    def dump(self, value: T) -> Any: ...

    def load(self, data: Any) -> T: ...


def instant(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // MICROSECOND


def from_instant(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + value * MICROSECOND


def utc_instant(value: int) -> datetime:
    """``EPOCH + value`` microseconds, exactly; the last one made is remembered, because an
    access entry's ``fresh_until`` is as a rule the very instant its value's decision holds
    until, which the value's codec has just made (the entry is read after its value)."""
    recent = _RECENT[0]
    if recent[0] == value:
        return recent[1]
    made = EPOCH + value * MICROSECOND
    _RECENT[0] = (value, made)  # (replaced whole: any thread reads a matching pair)
    return made


_RECENT: list[tuple[int, datetime]] = [(0, EPOCH)]


def lifetime(value: int) -> timedelta:
    """``value`` microseconds as a timedelta: the few distances between an entry's
    ``fresh_until`` and ``stale_until`` (each cache's ``stale_if_error``, as a rule) are made
    once and remembered (a bounded memo)."""
    found = _LIFETIMES.get(value)
    if found is None:
        found = value * MICROSECOND
        if len(_LIFETIMES) < _MAX_LIFETIMES:
            _LIFETIMES[value] = found
    return found


_LIFETIMES: dict[int, timedelta] = {}
_MAX_LIFETIMES = 64


def seconds_of_day(value: time | None) -> int | None:
    return None if value is None else value.hour * 3600 + value.minute * 60 + value.second


def from_seconds_of_day(value: int | None) -> time | None:
    if value is None:
        return None
    hours, rest = divmod(value, 3600)
    return time(hours, *divmod(rest, 60))


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
            instant(entry.fresh_until),
            instant(entry.stale_until),
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
            fresh, stale = int(fresh_until), int(stale_until)
            if not FIRST_INSTANT <= stale <= LAST_INSTANT:
                raise CodecError("an entry's stale_until is beyond the datetimes")
            # Both instants in UTC: the entry's shape is their distance (utc_entry), and
            # stale_until is not made only to compute it.
            entry: CacheEntry[T] = utc_entry(
                self._values.load(value),  # (first: see utc_instant)
                utc_instant(fresh),
                lifetime(stale - fresh),
                tier,
                owner,
            )
            return entry, owner_generation
        except CodecError:
            raise
        except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise CodecError(f"unreadable cache entry: {exc}") from None
