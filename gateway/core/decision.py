"""The access decision: a pure function of (payload, rule, now, policy).

The platform answered at ``t0 = payload.fetched_at``; between fetches the gateway re-evaluates
that answer locally. Local evaluation may only *close* access (window end, lifetime end, pause
start), never open it: whatever could open is an instant at which the payload stops being valid,
so the platform confirms every opening. That one rule yields both outputs below: ``valid_until``
(fetch again at the first possible opening, or earlier caps) and ``stable_until`` (the cached
decision holds until the first closing).

Reasons, a fixed set for logs and metrics:

- ``granted``: the rule is satisfied by usable items.
- ``customer_blocked``: the platform reported the customer blocked.
- ``platform_denied``: the platform's top-level ``accessGranted`` was false (this includes
  unknown customers); local evaluation never overrides it.
- ``no_matching_item``: the payload has no item for the required ids (for ``all``: for one of
  them), so no time can change the answer.
- ``no_usable_item``: items exist, but none (for ``all``: not one per id) is usable now.

Inputs may carry any time zone; the arithmetic runs on UTC instants, because aware datetimes
that share one zoneinfo object add and compare by wall clock, which is wrong across DST.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.timeline import normalise_window, window_change_points, window_contains

GRANTED = "granted"
CUSTOMER_BLOCKED = "customer_blocked"
PLATFORM_DENIED = "platform_denied"
NO_MATCHING_ITEM = "no_matching_item"
NO_USABLE_ITEM = "no_usable_item"
REASONS = frozenset({GRANTED, CUSTOMER_BLOCKED, PLATFORM_DENIED, NO_MATCHING_ITEM, NO_USABLE_ITEM})

# Denials that no passing of time can change.
_STATIC_DENIALS = frozenset({CUSTOMER_BLOCKED, PLATFORM_DENIED, NO_MATCHING_ITEM})


@dataclass(frozen=True, slots=True, init=False)  # written out: see gateway.core.payload
class Decision:
    """The answer for one request, and how long it and its payload can be reused.

    ``valid_until`` depends only on the payload, rule and policy: when to fetch again.
    ``stable_until`` is when this exact answer may first change (never after ``valid_until``;
    equal to ``now`` once the payload has expired), so a caller may reuse the decision until then
    without re-evaluating. ``cacheable`` is false when the payload was already expired when
    fetched: it may answer the requests that waited for it, but must not be stored.
    Both instants are in UTC.
    """

    granted: bool
    reason: str
    valid_until: datetime
    stable_until: datetime
    cacheable: bool

    def __init__(
        self,
        granted: bool,
        reason: str,
        valid_until: datetime,
        stable_until: datetime,
        cacheable: bool,
    ) -> None:
        object.__setattr__(self, "granted", granted)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "valid_until", valid_until)
        object.__setattr__(self, "stable_until", stable_until)
        object.__setattr__(self, "cacheable", cacheable)


def evaluate_access(
    payload: AccessPayload, rule: AccessRule, now: datetime, policy: ValidityPolicy
) -> Decision:
    """Decide whether ``rule`` is satisfied at ``now`` by the platform's answer in ``payload``."""
    items = relevant_items(payload, rule)
    tz = policy.time_zone
    now = now.astimezone(UTC)
    valid_until = _valid_until(payload, items, rule, policy)
    reason = _reason_at(payload, items, rule, now, tz)
    granted = reason == GRANTED
    if now >= valid_until:
        stable_until = now
    elif reason in _STATIC_DENIALS:
        stable_until = valid_until
    else:
        stable_until = _first_change(items, rule, now, valid_until, tz, granted)
    return Decision(granted, reason, valid_until, stable_until, valid_until > payload.fetched_at)


def payload_valid_until(
    payload: AccessPayload, rule: AccessRule, policy: ValidityPolicy
) -> datetime:
    """When ``payload`` must be fetched again to answer ``rule``; never before ``fetched_at``.

    The earliest of: ``max_ttl`` after the fetch; each relevant item's ``max_cache_date``
    (``default_ttl`` when missing); ``negative_ttl`` when the answer at the fetch is a denial;
    and the first instant after the fetch at which a relevant, unblocked item opens by time
    alone. Openings ignore the item's own ``granted`` flag: the platform denies an item outside
    its window, and must be asked again when the window opens.
    """
    return _valid_until(payload, relevant_items(payload, rule), rule, policy)


def relevant_items(payload: AccessPayload, rule: AccessRule) -> tuple[AccessItem, ...]:
    """The items for the rule's ids; all other items are ignored for every purpose."""
    return tuple(item for item in payload.items if item.access_right_id in rule.access_right_ids)


def item_usable_at(item: AccessItem, now: datetime, tz: tzinfo) -> bool:
    """Whether ``item`` grants access at ``now``: the platform granted it, it is not blocked,
    and time (lifetime, daily window in ``tz``, pause) leaves it open."""
    return _usable_at(item, now.astimezone(UTC), tz)


def item_open_at(item: AccessItem, at: datetime, tz: tzinfo) -> bool:
    """Whether the time-dependent conditions of ``item`` hold at ``at``, ignoring its flags.

    Every interval is half-open, ``[start, end)``, and a missing bound is open on that side.
    """
    return _open_at(item, at.astimezone(UTC), tz)


def _usable_at(item: AccessItem, at: datetime, tz: tzinfo) -> bool:
    return item.granted and not item.blocked and _open_at(item, at, tz)


def _open_at(item: AccessItem, at: datetime, tz: tzinfo) -> bool:
    # ``at`` must be in UTC: an instant compared with a bound carrying the very same zoneinfo
    # object is compared by wall clock, which is ambiguous in the autumn overlap.
    if item.lifetime_start is not None and at < item.lifetime_start:
        return False
    if item.lifetime_end is not None and at >= item.lifetime_end:
        return False
    if _paused(item, at):
        return False
    return window_contains(normalise_window(item.window_start, item.window_end), at, tz)


def _paused(item: AccessItem, at: datetime) -> bool:
    if item.pause_start is None and item.pause_end is None:
        return False
    after_start = item.pause_start is None or item.pause_start <= at
    before_end = item.pause_end is None or at < item.pause_end
    return after_start and before_end


def _valid_until(
    payload: AccessPayload, items: tuple[AccessItem, ...], rule: AccessRule, policy: ValidityPolicy
) -> datetime:
    t0 = payload.fetched_at.astimezone(UTC)
    until = t0 + policy.max_ttl
    for item in items:
        cache_date = item.max_cache_date
        until = min(until, t0 + policy.default_ttl if cache_date is None else cache_date)
    until = until.astimezone(UTC)
    if _reason_at(payload, items, rule, t0, policy.time_zone) != GRANTED:
        until = min(until, t0 + policy.negative_ttl)
    if until <= t0:
        return t0
    for item in items:
        opening = None if item.blocked else _first_opening(item, t0, until, policy.time_zone)
        if opening is not None:
            until = opening
    return until


def _first_opening(item: AccessItem, lo: datetime, hi: datetime, tz: tzinfo) -> datetime | None:
    """The first instant in (lo, hi) at which ``item`` goes from closed to open, if any."""
    was_open = _open_at(item, lo, tz)
    for point in sorted(_change_points(item, lo, hi, tz)):
        is_open = _open_at(item, point, tz)
        if is_open and not was_open:
            return point
        was_open = is_open
    return None


def _first_change(
    items: tuple[AccessItem, ...],
    rule: AccessRule,
    now: datetime,
    until: datetime,
    tz: tzinfo,
    granted: bool,
) -> datetime:
    """The first instant in (now, until) at which the rule's answer is no longer ``granted``.

    Only items the platform granted and did not block can ever be usable, so only their change
    points matter. Between change points every item's state, hence the answer, is constant.
    """
    live = tuple(item for item in items if item.granted and not item.blocked)
    points = (point for item in live for point in _change_points(item, now, until, tz))
    for point in sorted(points):
        if _satisfied(live, rule, point, tz) != granted:
            return point
    return until


def _change_points(item: AccessItem, lo: datetime, hi: datetime, tz: tzinfo) -> list[datetime]:
    """Instants in (lo, hi) at which ``_open_at`` may change; a superset, unsorted, in UTC."""
    bounds = (item.lifetime_start, item.lifetime_end, item.pause_start, item.pause_end)
    points = [bound.astimezone(UTC) for bound in bounds if bound is not None and lo < bound < hi]
    window = normalise_window(item.window_start, item.window_end)
    points.extend(window_change_points(window, lo, hi, tz))
    return points


def _reason_at(
    payload: AccessPayload,
    items: tuple[AccessItem, ...],
    rule: AccessRule,
    at: datetime,
    tz: tzinfo,
) -> str:
    if payload.customer_blocked:
        return CUSTOMER_BLOCKED
    if not payload.granted:
        return PLATFORM_DENIED
    present = {item.access_right_id for item in items}
    if not present or (rule.require == "all" and not present.issuperset(rule.access_right_ids)):
        return NO_MATCHING_ITEM
    return GRANTED if _satisfied(items, rule, at, tz) else NO_USABLE_ITEM


def _satisfied(items: Iterable[AccessItem], rule: AccessRule, at: datetime, tz: tzinfo) -> bool:
    """Whether the usable items at ``at`` satisfy the rule (items are already the relevant ones)."""
    usable = {item.access_right_id for item in items if _usable_at(item, at, tz)}
    if rule.require == "all":
        return usable.issuperset(rule.access_right_ids)
    return bool(usable)
