"""Table-driven tests of the access decision: usability, rules, validity and stability.

Expected instants are written in UTC on purpose: around the DST switches a Berlin wall-clock
reading is ambiguous or does not exist, and the point of these tables is to pin the instant.
Europe/Berlin 2026: 03-29 01:00 UTC (02:00 CET -> 03:00 CEST), 10-25 01:00 UTC (03:00 CEST ->
02:00 CET).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest

from gateway.core.decision import (
    CUSTOMER_BLOCKED,
    GRANTED,
    NO_MATCHING_ITEM,
    NO_USABLE_ITEM,
    PLATFORM_DENIED,
    REASONS,
    evaluate_access,
    item_open_at,
    item_usable_at,
    payload_valid_until,
)
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.timeline import offset_changes

BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
NEW_YORK = ZoneInfo("America/New_York")

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def berlin(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN, fold=fold)


# A quiet winter Tuesday: 10:00 CET.
T0 = berlin(2026, 1, 13, 10)

# Long TTLs, so that openings and closings are what the validity tests see.
LONG = ValidityPolicy(BERLIN, max_ttl=3 * DAY, default_ttl=3 * DAY, negative_ttl=3 * DAY)


def policy(
    tz: tzinfo = BERLIN,
    max_ttl: timedelta = 3 * DAY,
    default_ttl: timedelta = 3 * DAY,
    negative_ttl: timedelta = 3 * DAY,
) -> ValidityPolicy:
    return ValidityPolicy(tz, max_ttl, default_ttl, negative_ttl)


def item(right: str = "a", granted: bool = True, **fields: Any) -> AccessItem:
    return AccessItem(right, granted, **fields)


def payload(
    *items: AccessItem,
    t0: datetime = T0,
    granted: bool = True,
    customer_blocked: bool = False,
) -> AccessPayload:
    return AccessPayload("c1", customer_blocked, granted, items, t0)


def rule(*ids: str, require: Literal["any", "all"] = "any") -> AccessRule:
    return AccessRule(ids or ("a",), require)


# --- the usability predicate -------------------------------------------------------------------


def window(start: time | None, end: time | None) -> AccessItem:
    return item(window_start=start, window_end=end)


@pytest.mark.parametrize(
    ("subject", "at", "usable"),
    [
        pytest.param(
            window(time(8), time(18)), berlin(2026, 1, 13, 7, 59, 59), False, id="before-window"
        ),
        pytest.param(
            window(time(8), time(18)), berlin(2026, 1, 13, 8), True, id="window-start-inclusive"
        ),
        pytest.param(
            window(time(8), time(18)), berlin(2026, 1, 13, 17, 59), True, id="inside-window"
        ),
        pytest.param(
            window(time(8), time(18)), berlin(2026, 1, 13, 18), False, id="window-end-exclusive"
        ),
        pytest.param(window(time(8), time(9)), utc(2026, 1, 13, 7, 30), True, id="window-in-cet"),
        pytest.param(window(time(8), time(9)), utc(2026, 7, 14, 7, 30), False, id="window-in-cest"),
        pytest.param(window(time(22), time(6)), berlin(2026, 1, 13, 23), True, id="crossing-late"),
        pytest.param(
            window(time(22), time(6)), berlin(2026, 1, 13, 5, 59), True, id="crossing-early"
        ),
        pytest.param(window(time(22), time(6)), berlin(2026, 1, 13, 6), False, id="crossing-end"),
        pytest.param(
            window(time(22), time(6)), berlin(2026, 1, 13, 21, 59), False, id="crossing-before"
        ),
        pytest.param(
            window(time(10), time(10)), berlin(2026, 1, 13, 3), True, id="start-equals-end"
        ),
        pytest.param(window(None, None), berlin(2026, 1, 13, 3), True, id="no-window"),
        pytest.param(
            window(time(20), None), berlin(2026, 1, 13, 19, 59), False, id="start-only-before"
        ),
        pytest.param(
            window(time(20), None), berlin(2026, 1, 13, 23, 59), True, id="start-only-evening"
        ),
        pytest.param(
            window(time(20), None), berlin(2026, 1, 14, 0), False, id="start-only-midnight"
        ),
        pytest.param(window(None, time(6)), berlin(2026, 1, 13, 0), True, id="end-only-midnight"),
        pytest.param(window(None, time(6)), berlin(2026, 1, 13, 6), False, id="end-only-end"),
        pytest.param(
            window(time(0), None), berlin(2026, 1, 13, 3), True, id="start-only-midnight-all-day"
        ),
        pytest.param(
            window(None, time(0)), berlin(2026, 1, 13, 3), True, id="end-only-midnight-all-day"
        ),
        pytest.param(item(lifetime_start=T0), T0 - MINUTE, False, id="before-lifetime"),
        pytest.param(item(lifetime_start=T0), T0, True, id="lifetime-start-inclusive"),
        pytest.param(item(lifetime_end=T0), T0 - MINUTE, True, id="inside-lifetime"),
        pytest.param(item(lifetime_end=T0), T0, False, id="lifetime-end-exclusive"),
        pytest.param(
            item(pause_start=T0, pause_end=T0 + HOUR), T0 - MINUTE, True, id="before-pause"
        ),
        pytest.param(
            item(pause_start=T0, pause_end=T0 + HOUR), T0, False, id="pause-start-inclusive"
        ),
        pytest.param(
            item(pause_start=T0, pause_end=T0 + HOUR), T0 + HOUR, True, id="pause-end-exclusive"
        ),
        pytest.param(item(pause_end=T0), T0 - DAY, False, id="paused-until-end"),
        pytest.param(item(pause_end=T0), T0, True, id="pause-ended"),
        pytest.param(item(pause_start=T0), T0 - MINUTE, True, id="before-open-pause"),
        pytest.param(item(pause_start=T0), T0 + 999 * DAY, False, id="paused-forever"),
        pytest.param(item(blocked=True), T0, False, id="blocked"),
        pytest.param(item(granted=False), T0, False, id="platform-denied-item"),
    ],
)
def test_item_usable_at(subject: AccessItem, at: datetime, usable: bool) -> None:
    assert item_usable_at(subject, at, BERLIN) is usable


def test_item_open_at_ignores_the_flags() -> None:
    assert item_open_at(item(granted=False, blocked=True), T0, BERLIN)


def test_offset_changes_finds_both_berlin_switches_to_the_second() -> None:
    changes = offset_changes(BERLIN, utc(2026, 1, 1), utc(2026, 12, 31))
    assert changes == [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)]
    assert offset_changes(UTC, utc(2026, 1, 1), utc(2027, 6, 1)) == []


# --- the decision at one instant ---------------------------------------------------------------

A = item("a")
B = item("b")
A_CLOSED = item("a", window_start=time(20), window_end=time(22))
B_CLOSED = item("b", lifetime_start=T0 + HOUR)


@pytest.mark.parametrize(
    ("subject", "required", "granted", "reason"),
    [
        pytest.param(payload(A), rule("a"), True, GRANTED, id="usable-item"),
        pytest.param(
            payload(A, customer_blocked=True),
            rule("a"),
            False,
            CUSTOMER_BLOCKED,
            id="customer-blocked",
        ),
        pytest.param(
            payload(A, granted=False), rule("a"), False, PLATFORM_DENIED, id="platform-denied"
        ),
        pytest.param(
            AccessPayload.no_access("c1", T0),
            rule("a"),
            False,
            PLATFORM_DENIED,
            id="unknown-customer",
        ),
        pytest.param(
            payload(item(granted=False)),
            rule("a"),
            False,
            NO_USABLE_ITEM,
            id="item-denied-but-open",
        ),
        pytest.param(
            payload(item(blocked=True)), rule("a"), False, NO_USABLE_ITEM, id="blocked-item"
        ),
        pytest.param(payload(A_CLOSED), rule("a"), False, NO_USABLE_ITEM, id="outside-window"),
        pytest.param(payload(B), rule("a"), False, NO_MATCHING_ITEM, id="only-other-ids"),
        pytest.param(
            payload(A_CLOSED, B), rule("a"), False, NO_USABLE_ITEM, id="other-id-usable-ignored"
        ),
        pytest.param(payload(A_CLOSED, B), rule("a", "b"), True, GRANTED, id="any-second-id"),
        pytest.param(
            payload(A_CLOSED, B_CLOSED), rule("a", "b"), False, NO_USABLE_ITEM, id="any-none-usable"
        ),
        pytest.param(payload(A, B), rule("a", "b", require="all"), True, GRANTED, id="all-usable"),
        pytest.param(
            payload(A, B_CLOSED),
            rule("a", "b", require="all"),
            False,
            NO_USABLE_ITEM,
            id="all-one-closed",
        ),
        pytest.param(
            payload(A), rule("a", "b", require="all"), False, NO_MATCHING_ITEM, id="all-one-missing"
        ),
        pytest.param(
            payload(item(blocked=True), A_CLOSED, A),
            rule("a"),
            True,
            GRANTED,
            id="one-of-several-items-per-id",
        ),
        pytest.param(
            payload(A_CLOSED, A, B_CLOSED, B),
            rule("a", "b", require="all"),
            True,
            GRANTED,
            id="all-with-several-items-per-id",
        ),
    ],
)
def test_decision_at_fetch(
    subject: AccessPayload, required: AccessRule, granted: bool, reason: str
) -> None:
    decision = evaluate_access(subject, required, T0, LONG)
    assert (decision.granted, decision.reason) == (granted, reason)
    assert decision.reason in REASONS


# --- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "knobs", "valid_until"),
    [
        pytest.param(payload(A), policy(max_ttl=HOUR), T0 + HOUR, id="max-ttl-cap"),
        pytest.param(
            payload(A),
            policy(default_ttl=2 * HOUR),
            T0 + 2 * HOUR,
            id="no-max-cache-date-default-ttl",
        ),
        pytest.param(
            payload(item(max_cache_date=T0 + 2 * HOUR), item(max_cache_date=T0 + HOUR)),
            LONG,
            T0 + HOUR,
            id="earliest-max-cache-date",
        ),
        pytest.param(
            payload(item(max_cache_date=T0 + 2 * HOUR), item()),
            policy(default_ttl=HOUR),
            T0 + HOUR,
            id="default-ttl-below-max-cache-date",
        ),
        pytest.param(
            payload(item(max_cache_date=T0 + 5 * DAY)),
            policy(max_ttl=HOUR),
            T0 + HOUR,
            id="max-ttl-below-cache-date",
        ),
        pytest.param(
            payload(A, item("b", max_cache_date=T0 + MINUTE)),
            LONG,
            T0 + 3 * DAY,
            id="other-id-cache-date-ignored",
        ),
        pytest.param(
            payload(A, item(blocked=True, max_cache_date=T0 + HOUR)),
            LONG,
            T0 + HOUR,
            id="blocked-item-cache-date",
        ),
        pytest.param(
            payload(A, item(window_start=time(12), window_end=time(13))),
            LONG,
            berlin(2026, 1, 13, 12),
            id="window-opening",
        ),
        pytest.param(
            payload(item(window_start=time(8), window_end=time(11))),
            LONG,
            berlin(2026, 1, 14, 8),
            id="window-reopening-after-close",
        ),
        pytest.param(
            payload(item(granted=False, window_start=time(12), window_end=time(13))),
            LONG,
            berlin(2026, 1, 13, 12),
            id="item-denied-outside-window-refetched-at-opening",
        ),
        pytest.param(
            payload(item(granted=False, window_start=time(8), window_end=time(11))),
            LONG,
            berlin(2026, 1, 14, 8),
            id="item-denied-inside-window-refetched-at-reopening",
        ),
        pytest.param(
            payload(A, item(lifetime_start=T0 + HOUR)), LONG, T0 + HOUR, id="lifetime-start"
        ),
        pytest.param(
            payload(A, item(lifetime_start=T0 + 4 * DAY)),
            LONG,
            T0 + 3 * DAY,
            id="lifetime-start-beyond-cap",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + HOUR)), LONG, T0 + 3 * DAY, id="lifetime-end-no-refetch"
        ),
        pytest.param(
            payload(A, item(pause_start=T0 - HOUR, pause_end=T0 + HOUR)),
            LONG,
            T0 + HOUR,
            id="pause-end",
        ),
        pytest.param(
            payload(A, item(pause_end=T0 + 2 * HOUR)),
            LONG,
            T0 + 2 * HOUR,
            id="open-start-pause-end",
        ),
        pytest.param(
            payload(A, item(pause_start=T0 - HOUR)), LONG, T0 + 3 * DAY, id="endless-pause"
        ),
        pytest.param(
            payload(A, item(pause_start=T0 + HOUR, pause_end=T0 + 2 * HOUR)),
            LONG,
            T0 + 2 * HOUR,
            id="future-pause-end-reopens",
        ),
        pytest.param(
            payload(A, item(blocked=True, lifetime_start=T0 + HOUR)),
            LONG,
            T0 + 3 * DAY,
            id="blocked-never-opens",
        ),
        pytest.param(
            payload(A, item("b", lifetime_start=T0 + HOUR)),
            LONG,
            T0 + 3 * DAY,
            id="other-id-opening-ignored",
        ),
        pytest.param(
            payload(A, customer_blocked=True),
            policy(negative_ttl=5 * MINUTE),
            T0 + 5 * MINUTE,
            id="negative-blocked",
        ),
        pytest.param(
            payload(A, granted=False),
            policy(negative_ttl=5 * MINUTE),
            T0 + 5 * MINUTE,
            id="negative-platform",
        ),
        pytest.param(
            AccessPayload.no_access("c1", T0),
            policy(negative_ttl=5 * MINUTE),
            T0 + 5 * MINUTE,
            id="negative-unknown",
        ),
        pytest.param(
            payload(B),
            policy(negative_ttl=5 * MINUTE),
            T0 + 5 * MINUTE,
            id="negative-no-matching-item",
        ),
        pytest.param(
            payload(item(lifetime_start=T0 + HOUR)),
            policy(negative_ttl=5 * MINUTE),
            T0 + 5 * MINUTE,
            id="negative-before-opening",
        ),
        pytest.param(
            payload(item(lifetime_start=T0 + HOUR)),
            policy(negative_ttl=2 * HOUR),
            T0 + HOUR,
            id="opening-before-negative",
        ),
        pytest.param(
            payload(A),
            policy(negative_ttl=5 * MINUTE),
            T0 + 3 * DAY,
            id="grant-ignores-negative-ttl",
        ),
    ],
)
def test_valid_until(subject: AccessPayload, knobs: ValidityPolicy, valid_until: datetime) -> None:
    assert payload_valid_until(subject, rule("a"), knobs) == valid_until
    decision = evaluate_access(subject, rule("a"), T0, knobs)
    assert decision.valid_until == valid_until
    assert decision.cacheable


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(payload(item(max_cache_date=T0 - HOUR)), id="max-cache-date-past"),
        pytest.param(payload(item(max_cache_date=T0)), id="max-cache-date-now"),
        pytest.param(
            payload(A, item(max_cache_date=T0 - HOUR, lifetime_start=T0 + HOUR)),
            id="past-wins-over-opening",
        ),
        pytest.param(payload(B_CLOSED), id="zero-negative-ttl"),
    ],
)
def test_expired_at_fetch_is_served_but_not_stored(subject: AccessPayload) -> None:
    decision = evaluate_access(subject, rule("a"), T0, policy(negative_ttl=timedelta(0)))
    assert decision.valid_until == T0
    assert decision.stable_until == T0
    assert not decision.cacheable


def test_max_cache_date_past_on_other_id_is_ignored() -> None:
    decision = evaluate_access(payload(A, item("b", max_cache_date=T0 - HOUR)), rule("a"), T0, LONG)
    assert decision.cacheable


# --- stability ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "required", "now", "granted", "stable_until"),
    [
        pytest.param(payload(A), rule("a"), T0, True, T0 + 3 * DAY, id="nothing-changes"),
        pytest.param(
            payload(item(window_start=time(8), window_end=time(18))),
            rule("a"),
            T0,
            True,
            berlin(2026, 1, 13, 18),
            id="window-end",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + HOUR)), rule("a"), T0, True, T0 + HOUR, id="lifetime-end"
        ),
        pytest.param(
            payload(item(pause_start=T0 + HOUR, pause_end=T0 + 2 * HOUR)),
            rule("a"),
            T0,
            True,
            T0 + HOUR,
            id="pause-start",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + HOUR), item(lifetime_end=T0 + 2 * HOUR)),
            rule("a"),
            T0,
            True,
            T0 + 2 * HOUR,
            id="any-holds-until-last-item-closes",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + 2 * HOUR), item("b", lifetime_end=T0 + HOUR)),
            rule("a", "b", require="all"),
            T0,
            True,
            T0 + HOUR,
            id="all-ends-with-first-id",
        ),
        pytest.param(
            payload(
                A,
                item(granted=False, lifetime_end=T0 + HOUR),
                item(blocked=True, lifetime_end=T0 + HOUR),
            ),
            rule("a"),
            T0,
            True,
            T0 + 3 * DAY,
            id="denied-items-closing-irrelevant",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + HOUR)),
            rule("a"),
            T0 + 30 * MINUTE,
            True,
            T0 + HOUR,
            id="later-now",
        ),
        pytest.param(
            payload(item(lifetime_end=T0 + HOUR)),
            rule("a"),
            T0 + HOUR,
            False,
            T0 + 3 * DAY,
            id="after-closing",
        ),
        pytest.param(
            payload(A, granted=False), rule("a"), T0, False, T0 + 3 * DAY, id="static-denial"
        ),
        pytest.param(
            payload(A_CLOSED),
            rule("a"),
            T0,
            False,
            berlin(2026, 1, 13, 20),
            id="denied-until-opening",
        ),
        pytest.param(
            payload(A), rule("a"), T0 + 3 * DAY, True, T0 + 3 * DAY, id="now-at-valid-until"
        ),
        pytest.param(
            payload(A), rule("a"), T0 + 9 * DAY, True, T0 + 9 * DAY, id="now-after-valid-until"
        ),
        pytest.param(
            payload(A_CLOSED),
            rule("a"),
            T0 + 4 * DAY,
            False,
            T0 + 4 * DAY,
            id="denied-after-valid-until",
        ),
        pytest.param(
            payload(item(lifetime_start=T0 - 30 * MINUTE), t0=T0 - HOUR),
            rule("a"),
            T0 - HOUR,
            False,
            T0 - 30 * MINUTE,
            id="fetched-before-opening",
        ),
        pytest.param(
            payload(item(lifetime_start=T0 - 30 * MINUTE)),
            rule("a"),
            T0 - HOUR,
            False,
            T0 - 30 * MINUTE,
            id="clock-skew-now-before-fetch",
        ),
    ],
)
def test_stable_until(
    subject: AccessPayload,
    required: AccessRule,
    now: datetime,
    granted: bool,
    stable_until: datetime,
) -> None:
    decision = evaluate_access(subject, required, now, LONG)
    assert decision.granted is granted
    assert decision.stable_until == stable_until


# --- daylight saving time ----------------------------------------------------------------------


def windowed(
    start: time | None, end: time | None, t0: datetime, granted: bool = True
) -> AccessPayload:
    return payload(item(granted=granted, window_start=start, window_end=end), t0=t0)


@pytest.mark.parametrize(
    ("subject", "tz", "granted", "stable_until", "valid_until"),
    [
        # Spring: 2026-03-29, Berlin jumps from 02:00 CET to 03:00 CEST at 01:00 UTC.
        pytest.param(
            windowed(time(2), time(3), utc(2026, 3, 28, 23), granted=False),
            BERLIN,
            False,
            utc(2026, 3, 28, 23, 5),
            utc(2026, 3, 30, 0),
            id="spring-window-inside-gap-never-opens",
        ),
        pytest.param(
            windowed(time(2, 30), time(5), utc(2026, 3, 28, 23), granted=False),
            BERLIN,
            False,
            utc(2026, 3, 28, 23, 5),
            utc(2026, 3, 29, 1),
            id="spring-start-in-gap-opens-at-switch",
        ),
        pytest.param(
            windowed(time(2, 30), time(5), utc(2026, 3, 29, 1, 30)),
            BERLIN,
            True,
            utc(2026, 3, 29, 3),
            utc(2026, 3, 30, 0, 30),
            id="spring-start-in-gap-closes-in-cest",
        ),
        pytest.param(
            windowed(time(22), time(2, 30), utc(2026, 3, 28, 22)),
            BERLIN,
            True,
            utc(2026, 3, 29, 1),
            utc(2026, 3, 29, 20),
            id="spring-end-in-gap-closes-at-switch",
        ),
        pytest.param(
            windowed(time(22), time(6), utc(2026, 3, 28, 20), granted=False),
            BERLIN,
            False,
            utc(2026, 3, 28, 20, 5),
            utc(2026, 3, 28, 21),
            id="spring-crossing-midnight-opens-in-cet",
        ),
        pytest.param(
            windowed(time(22), time(6), utc(2026, 3, 28, 21)),
            BERLIN,
            True,
            utc(2026, 3, 29, 4),
            utc(2026, 3, 29, 20),
            id="spring-crossing-midnight-lasts-seven-hours",
        ),
        # Autumn: 2026-10-25, Berlin falls back from 03:00 CEST to 02:00 CET at 01:00 UTC.
        pytest.param(
            windowed(time(2, 30), time(2, 45), utc(2026, 10, 24, 23), granted=False),
            BERLIN,
            False,
            utc(2026, 10, 24, 23, 5),
            utc(2026, 10, 25, 0, 30),
            id="autumn-overlap-window-first-opening",
        ),
        pytest.param(
            windowed(time(2, 30), time(2, 45), utc(2026, 10, 25, 0, 35)),
            BERLIN,
            True,
            utc(2026, 10, 25, 0, 45),
            utc(2026, 10, 25, 1, 30),
            id="autumn-overlap-window-reopens-in-second-fold",
        ),
        pytest.param(
            windowed(time(2, 30), time(6), utc(2026, 10, 25, 0, 45)),
            BERLIN,
            True,
            utc(2026, 10, 25, 1),
            utc(2026, 10, 25, 1, 30),
            id="autumn-start-in-overlap-closes-at-switch",
        ),
        pytest.param(
            windowed(time(1), time(2, 15), utc(2026, 10, 24, 23, 30)),
            BERLIN,
            True,
            utc(2026, 10, 25, 0, 15),
            utc(2026, 10, 25, 1),
            id="autumn-end-in-overlap-reopens-at-switch",
        ),
        pytest.param(
            windowed(time(22), time(2, 30), utc(2026, 10, 24, 22, 45)),
            BERLIN,
            True,
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1),
            id="autumn-crossing-midnight-reopens-at-switch",
        ),
        pytest.param(
            windowed(time(22), time(2, 30), utc(2026, 10, 25, 1)),
            BERLIN,
            True,
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 21),
            id="autumn-crossing-midnight-second-fold",
        ),
        pytest.param(
            windowed(time(22), time(6), utc(2026, 10, 24, 20)),
            BERLIN,
            True,
            utc(2026, 10, 25, 5),
            utc(2026, 10, 25, 21),
            id="autumn-crossing-midnight-lasts-nine-hours",
        ),
        # Lord Howe moves by 30 minutes: 04-05 01:30 happens twice, 10-04 02:00-02:30 never.
        pytest.param(
            windowed(time(1, 45), time(2, 10), utc(2026, 4, 4, 14, 50)),
            LORD_HOWE,
            True,
            utc(2026, 4, 4, 15),
            utc(2026, 4, 4, 15, 15),
            id="lord-howe-half-hour-overlap",
        ),
        pytest.param(
            windowed(time(2), time(2, 15), utc(2026, 10, 3, 15), granted=False),
            LORD_HOWE,
            False,
            utc(2026, 10, 3, 15, 5),
            utc(2026, 10, 4, 15),
            id="lord-howe-half-hour-gap",
        ),
        # New York falls back from 02:00 EDT to 01:00 EST at 06:00 UTC on 2026-11-01.
        pytest.param(
            windowed(time(1, 30), time(1, 45), utc(2026, 11, 1, 5, 35)),
            NEW_YORK,
            True,
            utc(2026, 11, 1, 5, 45),
            utc(2026, 11, 1, 6, 30),
            id="new-york-overlap",
        ),
        pytest.param(
            windowed(time(8), time(18), utc(2026, 3, 29, 9)),
            timezone(timedelta(hours=5, minutes=30)),
            True,
            utc(2026, 3, 29, 12, 30),
            utc(2026, 3, 30, 2, 30),
            id="fixed-offset-zone",
        ),
    ],
)
def test_windows_across_offset_changes(
    subject: AccessPayload, tz: tzinfo, granted: bool, stable_until: datetime, valid_until: datetime
) -> None:
    knobs = policy(tz=tz, negative_ttl=5 * MINUTE if not granted else 3 * DAY)
    if not granted:
        # Denials are capped by negative_ttl; the opening shows with a long one.
        assert payload_valid_until(subject, rule("a"), policy(tz=tz)) == valid_until
    decision = evaluate_access(subject, rule("a"), subject.fetched_at, knobs)
    assert decision.granted is granted
    assert decision.stable_until == stable_until
    if granted:
        assert decision.valid_until == valid_until


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(utc(2026, 3, 29, 0, 59, 59), id="last-cet-second"),
        pytest.param(utc(2026, 3, 29, 1), id="first-cest-second"),
        pytest.param(utc(2026, 3, 29, 0, 30), id="mid-hour-cet"),
    ],
)
def test_window_inside_spring_gap_is_never_open(at: datetime) -> None:
    assert not item_usable_at(item(window_start=time(2), window_end=time(3)), at, BERLIN)


def test_instants_in_a_shared_zone_are_compared_as_instants() -> None:
    """Aware datetimes sharing one zoneinfo compare by wall clock; the core must not."""
    end = berlin(2026, 10, 25, 2, 30, fold=1)  # 01:30 UTC, the second 02:30
    fetched = berlin(2026, 10, 25, 2, 45)  # 00:45 UTC, the first 02:45
    decision = evaluate_access(
        payload(item(lifetime_end=end), t0=fetched), rule("a"), fetched, LONG
    )
    assert decision.granted
    assert decision.stable_until == utc(2026, 10, 25, 1, 30)


def test_ttls_are_elapsed_time_not_wall_clock() -> None:
    fetched = berlin(2026, 10, 24, 12)  # 10:00 UTC; a day later the clock reads 11:00 CET
    valid_until = payload_valid_until(payload(A, t0=fetched), rule("a"), policy(max_ttl=DAY))
    assert valid_until == utc(2026, 10, 25, 10)
