"""Properties of the access decision over random payloads around DST switches.

Every generated instant and wall-clock time lies on a whole minute, and the zones used switch on
whole minutes too, so a minute-by-minute scan is an exact reference for the transition search
(the last two tests): the decision is piecewise constant between minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.decision import Decision, evaluate_access, payload_valid_until
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy

MINUTE = timedelta(minutes=1)
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")

# (zone, an instant near which t0 is drawn): both Berlin switches, a plain summer day, and the
# 30-minute switches of Lord Howe.
SETTINGS = [
    (BERLIN, datetime(2026, 3, 29, 1, tzinfo=UTC)),
    (BERLIN, datetime(2026, 10, 25, 1, tzinfo=UTC)),
    (BERLIN, datetime(2026, 6, 15, 10, tzinfo=UTC)),
    (LORD_HOWE, datetime(2026, 4, 4, 15, tzinfo=UTC)),
    (LORD_HOWE, datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
]


def chance(percent: int) -> st.SearchStrategy[bool]:
    """True in about ``percent`` % of draws; shrinks towards the more likely outcome."""
    if percent > 50:
        return st.integers(0, 99).map(lambda n: n < percent)
    return st.integers(0, 99).map(lambda n: n >= 100 - percent)


@dataclass(frozen=True)
class Scenario:
    payload: AccessPayload
    rule: AccessRule
    policy: ValidityPolicy

    @property
    def t0(self) -> datetime:
        return self.payload.fetched_at

    def at(self, now: datetime) -> Decision:
        return evaluate_access(self.payload, self.rule, now, self.policy)

    def relevant(self) -> list[AccessItem]:
        return [i for i in self.payload.items if i.access_right_id in self.rule.access_right_ids]


def minutes(low: int, high: int) -> st.SearchStrategy[timedelta]:
    return st.integers(low, high).map(lambda n: n * MINUTE)


def clock(n: int) -> time:
    return time(n // 60 % 24, n % 60)


# Wall-clock times, biased towards the hours the clocks change (01:30-03:00 local in both zones),
# midnight and whole hours; night times lie between 21:00 and 04:00, half of them after 01:00.
wall_times = st.one_of(
    st.integers(0, 24 * 60 - 1),
    st.integers(60, 3 * 60 + 30),
    st.sampled_from([0, 90, 105, 120, 135, 150, 165, 180, 22 * 60, 23 * 60 + 59]),
).map(clock)
night_times = st.one_of(st.integers(60, 4 * 60), st.integers(21 * 60, 28 * 60)).map(clock)


@st.composite
def items(draw: st.DrawFn, t0: datetime, ids: tuple[str, ...]) -> AccessItem:
    """An item shaped like real ones: mostly granted and open-ended, often with a window."""

    def sometimes(percent: int, low: int, high: int) -> datetime | None:
        return t0 + draw(minutes(low, high)) if draw(chance(percent)) else None

    def wall_time(percent: int) -> time | None:
        return draw(wall_times) if draw(chance(percent)) else None

    pause = draw(chance(25))
    return AccessItem(
        access_right_id=draw(st.sampled_from((*ids, "other"))),
        granted=draw(chance(80)),
        blocked=draw(chance(10)),
        lifetime_start=sometimes(30, -2 * 24 * 60, 2 * 24 * 60),
        lifetime_end=sometimes(30, -60, 3 * 24 * 60),
        window_start=wall_time(70),
        window_end=wall_time(70),
        pause_start=sometimes(70, -24 * 60, 2 * 24 * 60) if pause else None,
        pause_end=sometimes(70, -60, 3 * 24 * 60) if pause else None,
        max_cache_date=sometimes(25, -60, 3 * 24 * 60),
    )


@st.composite
def scenarios(draw: st.DrawFn, max_ttl_minutes: int = 2 * 24 * 60) -> Scenario:
    """A payload, a rule and a policy; mostly with TTLs long enough for openings to matter."""
    tz, anchor = draw(st.sampled_from(SETTINGS))
    t0 = anchor + draw(minutes(-30 * 60, 6 * 60))
    ids = draw(st.lists(st.sampled_from(("a", "b", "c")), min_size=1, max_size=3, unique=True))
    rule = AccessRule(tuple(ids), draw(st.sampled_from(["any", "any", "all"])))
    item_list = st.lists(
        items(t0, rule.access_right_ids),
        min_size=int(draw(chance(90))),
        max_size=4,
    )
    payload = AccessPayload(
        customer_id="c1",
        customer_blocked=draw(chance(10)),
        granted=draw(chance(85)),
        items=tuple(draw(item_list)),
        fetched_at=t0,
    )
    typical = st.sampled_from([max_ttl_minutes, max_ttl_minutes // 2, max_ttl_minutes // 4])
    max_ttl = draw(st.one_of(typical, st.integers(0, max_ttl_minutes))) * MINUTE
    long_ttls = draw(chance(70))
    policy = ValidityPolicy(
        time_zone=tz,
        max_ttl=max_ttl,
        default_ttl=max_ttl if long_ttls else draw(minutes(1, 3 * 24 * 60)),
        negative_ttl=max_ttl if long_ttls else draw(minutes(0, 2 * 24 * 60)),
    )
    return Scenario(payload, rule, policy)


@st.composite
def night_scenarios(draw: st.DrawFn) -> Scenario:
    """Only night windows, t0 in the hours before a switch: what the clocks do, undiluted."""
    tz, switch = draw(st.sampled_from([s for s in SETTINGS if s[1].month != 6]))
    t0 = switch + draw(minutes(-6 * 60, 60))
    rule = draw(st.sampled_from([AccessRule(("a",)), AccessRule(("a", "b"), "all")]))

    def night_item() -> AccessItem:
        right = draw(st.sampled_from(rule.access_right_ids))
        start = draw(st.none() | night_times)
        return AccessItem(right, draw(chance(80)), window_start=start, window_end=draw(night_times))

    payload = AccessPayload(
        "c1", False, True, tuple(night_item() for _ in range(draw(st.integers(1, 3)))), t0
    )
    ttl = draw(minutes(6 * 60, 12 * 60))
    return Scenario(payload, rule, ValidityPolicy(tz, ttl, ttl, ttl))


fractions = st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=12)


def between(start: datetime, end: datetime, parts: list[float]) -> list[datetime]:
    """Instants in [start, end); timedelta * float rounds, so a part near 1 may hit ``end``."""
    return sorted(i for i in (start + (end - start) * part for part in parts) if i < end)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.sampled_from(["customer", "platform", "items"]), minutes(0, 5 * 24 * 60))
def test_never_grants_what_the_platform_denied(
    scenario: Scenario, how: str, later: timedelta
) -> None:
    payload = scenario.payload
    if how == "customer":
        payload = replace(payload, customer_blocked=True)
    elif how == "platform":
        payload = replace(payload, granted=False)
    else:
        payload = replace(payload, items=tuple(replace(i, granted=False) for i in payload.items))
    denied = replace(scenario, payload=payload)
    for now in (
        denied.t0,
        denied.t0 + later,
        payload_valid_until(payload, denied.rule, denied.policy),
    ):
        assert not denied.at(now).granted


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_valid_until_stays_within_its_caps(scenario: Scenario) -> None:
    t0, policy = scenario.t0, scenario.policy
    decision = scenario.at(t0)
    assert t0 <= decision.valid_until <= t0 + policy.max_ttl
    assert decision.cacheable is (decision.valid_until > t0)
    assert decision.valid_until == payload_valid_until(scenario.payload, scenario.rule, policy)
    for item in scenario.relevant():
        cache_date = item.max_cache_date or t0 + policy.default_ttl
        assert decision.valid_until <= max(t0, cache_date)
    if not decision.granted:
        assert decision.valid_until <= t0 + policy.negative_ttl


@settings(max_examples=150, deadline=None)
@given(scenarios(), fractions)
def test_access_only_closes_while_valid(scenario: Scenario, parts: list[float]) -> None:
    valid_until = scenario.at(scenario.t0).valid_until
    instants = [scenario.t0, *between(scenario.t0, valid_until, parts)]
    granted = [scenario.at(now).granted for now in instants]
    assert granted == sorted(granted, reverse=True), list(zip(instants, granted, strict=True))


@settings(max_examples=150, deadline=None)
@given(scenarios(), minutes(0, 3 * 24 * 60), fractions)
def test_decision_holds_until_stable_until(
    scenario: Scenario, later: timedelta, parts: list[float]
) -> None:
    now = scenario.t0 + later
    decision = scenario.at(now)
    assert now <= decision.stable_until <= max(now, decision.valid_until)
    for instant in [now, *between(now, decision.stable_until, parts)]:
        assert scenario.at(instant).granted is decision.granted, instant
    if now < decision.stable_until < decision.valid_until:
        assert scenario.at(decision.stable_until).granted is not decision.granted


# --- brute force: a minute-by-minute scan with an independent predicate ------------------------


def open_at(item: AccessItem, at: datetime, local: time) -> bool:
    """Reference: the item's time conditions, written out once more without shortcuts."""
    if item.lifetime_start is not None and at < item.lifetime_start:
        return False
    if item.lifetime_end is not None and at >= item.lifetime_end:
        return False
    pause_started = item.pause_start is None or at >= item.pause_start
    pause_ended = item.pause_end is not None and at >= item.pause_end
    if (item.pause_start, item.pause_end) != (None, None) and pause_started and not pause_ended:
        return False
    start = item.window_start or time(0)
    end = item.window_end or time(0)
    if start < end:
        return start <= local < end
    if start > end:
        return local >= start or local < end
    return True


def granted_at(scenario: Scenario, at: datetime, local: time) -> bool:
    payload = scenario.payload
    if payload.customer_blocked or not payload.granted:
        return False
    usable = {
        i.access_right_id
        for i in scenario.relevant()
        if i.granted and not i.blocked and open_at(i, at, local)
    }
    if scenario.rule.require == "all":
        return all(right in usable for right in scenario.rule.access_right_ids)
    return bool(usable)


def minute_grid(start: datetime, end: datetime, tz: tzinfo) -> list[tuple[datetime, time]]:
    count = (end - start) // MINUTE
    instants = (start + n * MINUTE for n in range(count + 1))
    return [(at, at.astimezone(tz).time()) for at in instants]


def scanned_valid_until(scenario: Scenario) -> datetime:
    """The earliest cap, or the first minute at which a relevant, unblocked item opens."""
    t0, policy = scenario.t0, scenario.policy
    relevant = scenario.relevant()
    caps = [t0 + policy.max_ttl] + [i.max_cache_date or t0 + policy.default_ttl for i in relevant]
    if not granted_at(scenario, t0, t0.astimezone(policy.time_zone).time()):
        caps.append(t0 + policy.negative_ttl)
    cap = max(t0, min(caps))
    for (before, local_before), (at, local) in pairwise(minute_grid(t0, cap, policy.time_zone)):
        for i in relevant:
            if not i.blocked and open_at(i, at, local) and not open_at(i, before, local_before):
                return at
    return cap


def scanned_stable_until(scenario: Scenario, now: datetime, valid_until: datetime) -> datetime:
    """The first minute in (now, valid_until) at which the answer changes, else valid_until."""
    if now >= valid_until:
        return now
    grid = minute_grid(now, valid_until, scenario.policy.time_zone)
    first = granted_at(scenario, *grid[0])
    return next(
        (at for at, local in grid[1:] if granted_at(scenario, at, local) is not first), valid_until
    )


def assert_matches_scan(scenario: Scenario, now: datetime) -> None:
    decision = scenario.at(now)
    local = now.astimezone(scenario.policy.time_zone).time()
    assert decision.granted is granted_at(scenario, now, local)
    assert decision.valid_until == scanned_valid_until(scenario)
    assert decision.stable_until == scanned_stable_until(scenario, now, decision.valid_until)


@settings(max_examples=200, deadline=None)
@given(scenarios(max_ttl_minutes=36 * 60), minutes(0, 36 * 60))
def test_decision_matches_a_minute_scan(scenario: Scenario, later: timedelta) -> None:
    assert_matches_scan(scenario, scenario.t0 + later)


@settings(max_examples=300, deadline=None)
@given(night_scenarios(), minutes(0, 12 * 60))
def test_decision_matches_a_minute_scan_across_dst_nights(
    scenario: Scenario, later: timedelta
) -> None:
    assert_matches_scan(scenario, scenario.t0 + later)
