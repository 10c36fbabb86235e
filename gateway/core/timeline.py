"""Wall-clock arithmetic for daily access windows: whether an instant is inside one, and the
instants at which that answer can change.

A daily window is written in local wall-clock time, but decisions are made at instants. The
mapping between the two is continuous and increasing except at UTC-offset changes (DST), where
local time jumps forward (a gap) or back (an overlap). So the window's answer is piecewise
constant, and can only change where the wall clock reads a window bound (in either fold) or
where the offset itself changes. Listing those instants lets callers find transitions exactly,
instead of sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache

MIDNIGHT = time(0)

# A window normalised to (start, end); ``None`` stands for "the whole day".
Window = tuple[time, time] | None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Offset changes are searched by comparing the offset at points this far apart: no real zone
# changes its offset twice within six hours, so no change can hide between two samples.
_SCAN_STEP_SECONDS = 6 * 3600


def normalise_window(start: time | None, end: time | None) -> Window:
    """Turn the platform's optional bounds into (start, end), or ``None`` for the whole day.

    A missing side is midnight: only a start means "from start until midnight", which is the
    midnight-crossing window (start, 00:00); only an end is (00:00, end). Equal bounds (including
    both missing) mean the whole day.
    """
    start = MIDNIGHT if start is None else start
    end = MIDNIGHT if end is None else end
    return None if start == end else (start, end)


def window_contains(window: Window, at: datetime, tz: tzinfo) -> bool:
    """Whether the local time of day of ``at`` in ``tz`` lies in ``[start, end)``.

    A window whose start is after its end crosses midnight.
    """
    if window is None:
        return True
    start, end = window
    tod = at.astimezone(tz).time()
    if start < end:
        return start <= tod < end
    return tod >= start or tod < end


def window_change_points(window: Window, lo: datetime, hi: datetime, tz: tzinfo) -> list[datetime]:
    """Every instant in the open interval (lo, hi) at which ``window_contains`` may change.

    These are the instants where the local clock reads a bound, in both folds (an autumn overlap
    shows the same reading twice), plus the offset changes themselves (the clock jumps over or
    back across a bound there). Readings inside a spring gap map to some instant anyway; such
    extra points are harmless, as callers evaluate the window at each point rather than assume
    it flips there.
    """
    if window is None:
        return []
    points = [p for p in offset_changes(tz, lo, hi) if lo < p < hi]
    first = lo.astimezone(tz).date()
    days = (hi.astimezone(tz).date() - first).days + 1
    for day in (first + timedelta(days=n) for n in range(days)):
        points.extend(p for p in _bound_instants(window, day, tz) if lo < p < hi)
    return points


def _bound_instants(window: tuple[time, time], day: date, tz: tzinfo) -> Iterator[datetime]:
    for bound in window:
        local = datetime.combine(day, bound, tzinfo=tz)
        yield local.astimezone(UTC)
        yield local.replace(fold=1).astimezone(UTC)


def offset_changes(tz: tzinfo, lo: datetime, hi: datetime) -> list[datetime]:
    """The instants in [lo's year, hi's year] (UTC years) at which ``tz`` changes its offset.

    The result may reach outside (lo, hi); callers filter. Per-year lists are cached because
    zoneinfo does not expose its transitions and finding them costs a scan.
    """
    return [
        change
        for year in range(lo.astimezone(UTC).year, hi.astimezone(UTC).year + 1)
        for change in _offset_changes_in_year(tz, year)
    ]


@lru_cache(maxsize=128)
def _offset_changes_in_year(tz: tzinfo, year: int) -> tuple[datetime, ...]:
    """Offset changes in (Jan 1 of ``year``, Jan 1 of the next year], to the second."""
    start = _seconds(datetime(year, 1, 1, tzinfo=UTC))
    stop = _seconds(datetime(year + 1, 1, 1, tzinfo=UTC))
    changes: list[datetime] = []
    left, left_offset = start, _offset(tz, start)
    while left < stop:
        right = min(left + _SCAN_STEP_SECONDS, stop)
        right_offset = _offset(tz, right)
        if right_offset != left_offset:
            changes.append(_first_second_with_new_offset(tz, left, right, left_offset))
        left, left_offset = right, right_offset
    return tuple(changes)


def _first_second_with_new_offset(
    tz: tzinfo, old: int, new: int, old_offset: timedelta | None
) -> datetime:
    """Bisect (old, new] for the first second whose offset differs from ``old_offset``."""
    while new - old > 1:
        middle = (old + new) // 2
        if _offset(tz, middle) == old_offset:
            old = middle
        else:
            new = middle
    return _instant(new)


def _offset(tz: tzinfo, seconds: int) -> timedelta | None:
    return _instant(seconds).astimezone(tz).utcoffset()


def _seconds(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(seconds=1)


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)
