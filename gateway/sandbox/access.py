"""The simulator's own ``accessGranted``: deliberately independent of :mod:`gateway.core`.

The gateway's decision core re-evaluates the platform's answer locally; if both were computed
by the same code, a shared mistake would pass every test. So the simulator keeps its own short
implementation of the platform's rules, and the gateway's tests check one against the other.

An item grants access at ``now`` when all of these hold:

- neither the item nor the customer is blocked;
- ``lifeTimeStart <= now < lifeTimeEnd`` (a missing bound is open);
- the wall-clock time in the configured zone is inside ``accessTimeStart``-``accessTimeEnd``
  (start > end crosses midnight, start == end is the whole day, a missing side is open);
- ``now`` is not inside the pause ``pausedTimeStart <= now < pausedTimeEnd`` (no pause when both
  are missing; a missing side is open).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time
from zoneinfo import ZoneInfo

from gateway.sandbox.model import AccessRightItem


def in_daily_window(start: time | None, end: time | None, time_of_day: time) -> bool:
    """Whether a wall-clock ``time_of_day`` lies inside the daily window ``[start, end)``."""
    if start is None:
        return end is None or time_of_day < end
    if end is None:
        return time_of_day >= start
    if start == end:
        return True
    if start < end:
        return start <= time_of_day < end
    return time_of_day >= start or time_of_day < end  # crosses midnight


def is_paused(item: AccessRightItem, now: datetime) -> bool:
    start, end = item.paused_time_start, item.paused_time_end
    if start is None and end is None:
        return False
    return (start is None or start <= now) and (end is None or now < end)


def in_lifetime(item: AccessRightItem, now: datetime) -> bool:
    start, end = item.life_time_start, item.life_time_end
    return (start is None or start <= now) and (end is None or now < end)


def item_granted(
    item: AccessRightItem, *, customer_blocked: bool, now: datetime, zone: ZoneInfo
) -> bool:
    """The platform's per-item ``accessGranted`` at ``now``."""
    if customer_blocked or item.blocked:
        return False
    if not in_lifetime(item, now) or is_paused(item, now):
        return False
    local = now.astimezone(zone).time().replace(tzinfo=None)
    return in_daily_window(item.access_time_start, item.access_time_end, local)


def any_granted(grants: Iterable[bool], *, customer_blocked: bool) -> bool:
    """Top-level ``accessGranted``: some item grants and the customer is not blocked."""
    return not customer_blocked and any(grants)
