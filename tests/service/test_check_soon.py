"""AccessService.check_soon: an L2-only hit answered without a task, in one round trip batched
with the tick's other lookups, and otherwise exactly AccessService.check (the same verdicts,
counts, copies into L1 and refreshes, the request counted once).

Each test checks what the lane did by counting the tasks it started to run ``check``
(CheckTasks): a request that the lane answered starts none; one it could not answer, one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from gateway.access import AccessOutcome, AccessRequest, Credentials, Verdict
from gateway.access.service import AccessService
from gateway.store.layered import LayeredCache
from gateway.store.redis_chain import SCRIPT, ChainAnswer, ChainLookup, ChainReader
from tests.service.conftest import (
    NO_RIGHTS,
    PLAIN,
    CheckTasks,
    ManualClock,
    Service,
    StartService,
)
from tests.service.processes import eventually
from tests.service.scripts import ScriptHooks, hooked_client
from tests.service.test_redis_chain import round_trips

SESSIONS = [PLAIN, NO_RIGHTS, "demo-session-paused", "demo-session-blocked-item"]


def request(session: str, path: str = "/premium/a") -> AccessRequest:
    return AccessRequest("GET", path, Credentials(session_token=session))


def soon(service: AccessService, access: AccessRequest) -> asyncio.Future[AccessOutcome]:
    """check_soon's future of the verdict itself."""
    return service.check_soon(access, lambda outcome: outcome)


def fields(outcome: AccessOutcome) -> tuple[object, ...]:
    return (outcome.verdict, outcome.reason, outcome.customer_id, outcome.cache, outcome.fail_open)


async def warmed(
    start_service: StartService, redis_with: redis.Redis | None = None
) -> tuple[Service, Service]:
    """A process that asked the platform for every session (Redis holds the answers), and a
    second one (using the client ``redis_with``, if given) whose L1 holds nothing, the script
    known to Redis."""
    first = await start_service(refresh_ahead=0, redis_timeout=2.0)
    for session in SESSIONS:
        await first.check(session)
    second = await start_service(refresh_ahead=0, redis_timeout=2.0, redis_with=redis_with)
    await ready(second)
    return first, second


async def ready(service: Service) -> None:
    """The service has read the epoch (once per process, before its first lookup: not the
    lane's business) and Redis knows the script."""
    l2 = service.service._cache._l2  # type: ignore[attr-defined]
    await l2.epoch.current()
    await l2._client.script_load(SCRIPT)


async def test_l2_only_hits_are_answered_by_the_lane_in_one_round_trip(
    start_service: StartService, redis_url: str
) -> None:
    first, second = await warmed(start_service)
    expected = [fields(await first.check(session)) for session in SESSIONS]
    checks = CheckTasks()
    async with round_trips(redis_url) as seen:
        outcomes = await asyncio.gather(
            *(soon(second.service, request(session)) for session in SESSIONS)
        )
    assert seen == ["evalsha"], seen.commands  # four requests, one batch
    assert checks.calls == 0  # no fall-back: the lane answered every one
    # What check answers from Redis alone: a hit, from the first process's answers.
    assert [fields(outcome) for outcome in outcomes] == [
        (verdict, reason, customer, "hit", False) for verdict, reason, customer, _, _ in expected
    ]
    assert Verdict.GRANTED in {o.verdict for o in outcomes}
    assert Verdict.DENIED in {o.verdict for o in outcomes}
    # Counted as check counts an L2-only hit, and copied into L1 as check copies it.
    assert second.lookups() == {("session", "l2", "hit"): 4, ("access", "l2", "hit"): 4}
    assert second.platform_calls() == 0
    async with round_trips(redis_url) as none:
        again = await soon(second.service, request(PLAIN))
    assert none == []
    assert again.cache == "hit"
    assert checks.calls == 1  # L1 holds it now: that is check's (peek's) business
    assert second.lookups()[("access", "l1", "hit")] == 1


async def test_the_lane_and_check_agree_at_every_instant(start_service: StartService) -> None:
    """Verdicts that depend on the instant (pauses, windows, an item's block) are decided at
    the same clock reading by both ways. (An answer past its end sends the lane to check,
    which asks the platform and stores the new answer in Redis, where the other process then
    finds it: the verdicts are compared, not the tiers.)"""
    sessions = [*SESSIONS, "demo-session-windows", "demo-session-upcoming"]
    first = await start_service(refresh_ahead=0, redis_timeout=2.0)
    for session in sessions:
        await first.check(session)
    lane = await start_service(refresh_ahead=0, redis_timeout=2.0)
    plain = await start_service(refresh_ahead=0, redis_timeout=2.0)
    clock = lane.service._clock
    assert isinstance(clock, ManualClock)
    assert clock is plain.service._clock
    checks = CheckTasks()
    answered = 0
    for step in range(6):
        await lane.forget_l1()
        await plain.forget_l1()
        calls = checks.calls
        by_lane = await asyncio.gather(
            *(soon(lane.service, request(session)) for session in sessions)
        )
        answered += len(sessions) - (checks.calls - calls)
        by_check = [await plain.service.check(request(session)) for session in sessions]
        assert [fields(o)[:3] for o in by_lane] == [fields(o)[:3] for o in by_check], step
        assert [o.expires_at for o in by_lane] == [o.expires_at for o in by_check], step
        clock.advance(7)
    assert answered >= 3 * len(sessions)  # most of them by the lane itself


@pytest.mark.parametrize(
    "case", ["unknown session", "no session", "public route", "deny route", "transfer token"]
)
async def test_anything_but_an_l2_hit_is_check_itself(
    start_service: StartService, case: str
) -> None:
    _, second = await warmed(start_service)
    reference = await start_service(refresh_ahead=0, redis_timeout=2.0)
    access = {
        "unknown session": request("no-such-session-token"),
        "no session": AccessRequest("GET", "/premium/a", Credentials()),
        "public route": request(PLAIN, "/"),
        "deny route": request(PLAIN, "/_paywall/../x"),
        "transfer token": AccessRequest(
            "GET", "/premium/a", Credentials(transfer_token="no-such-transfer-token")
        ),
    }[case]
    checks = CheckTasks()
    outcome = await soon(second.service, access)
    assert checks.calls == 1  # check answered it
    expected = await reference.service.check(access)
    assert (outcome.verdict, outcome.reason) == (expected.verdict, expected.reason)
    # Counted once: what check counts for it, nothing for the lane.
    assert sum(second.lookups().values()) == sum(reference.lookups().values())


def refreshes(service: Service) -> dict[tuple[str, str], float]:
    """The refresh-ahead samples that are not zero: (cache, result) -> count."""
    samples = {
        (cache, result): service.metrics.value(
            "paywall_refreshes_total", {"cache": cache, "result": result}
        )
        for cache in ("session", "access")
        for result in ("started", "succeeded", "failed")
    }
    return {k: v for k, v in samples.items() if v}


@pytest.mark.parametrize(
    ("session_ttl", "refreshed"),
    [(300, {"access"}), (30, {"access", "session"})],
)
async def test_entries_in_their_refresh_window_are_answered_and_refreshed_as_check_does(
    start_service: StartService, session_ttl: int, refreshed: set[str]
) -> None:
    """Answered from the entries by the lane, and their successors fetched in the background,
    one refresh per entry in its window, as check does (tests/service/test_refresh_ahead)."""
    cache = {"refresh_ahead": 50, "redis_timeout": 2.0, "session_ttl": session_ttl}
    first = await start_service(**cache)
    await first.check(PLAIN)
    lane = await start_service(**cache)
    await ready(lane)
    clock = lane.service._clock
    assert isinstance(clock, ManualClock)
    clock.advance(20)  # the access answer (60 s) is now within 50 s of its end; a 30 s session too
    checks = CheckTasks()
    outcome = await soon(lane.service, request(PLAIN))
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
    assert checks.calls == 0  # the lane answered
    once = {(cache, result): 1.0 for cache in refreshed for result in ("started", "succeeded")}

    async def settled() -> bool:
        return refreshes(lane) == once

    await eventually(settled, within=5.0)
    assert lane.lookups() == {("session", "l2", "hit"): 1, ("access", "l2", "hit"): 1}


async def test_a_failed_batch_goes_to_check_and_is_counted_once(
    start_service: StartService, redis_url: str
) -> None:
    failing = ScriptHooks(fail=True)
    _, second = await warmed(start_service, redis_with=hooked_client(redis_url, failing))
    checks = CheckTasks()
    outcomes = await asyncio.gather(
        *(soon(second.service, request(session)) for session in SESSIONS[:2])
    )
    # The lane's batch, then check's two chained reads (one batch too): both failed. The
    # first on a new connection, once; the second on the connection the reader kept, which
    # may have gone stale meanwhile, so it was tried once more.
    assert failing.failed == 3
    assert checks.calls == 2  # both asked again, through the guard
    assert [o.verdict for o in outcomes] == [Verdict.GRANTED, Verdict.DENIED]
    # Each request's failed read counted once (check's own), none for the lane's batch.
    errors = second.metrics.value("paywall_redis_errors_total", {"operation": "get"})
    assert errors == 2
    assert second.guard.state == "degraded"
    # Lately failed: the lane stays out of the way until the guard says "ok" again.
    before = checks.calls
    await soon(second.service, request(PLAIN))
    assert checks.calls == before + 1


async def test_an_answer_that_fails_fails_that_request_alone(start_service: StartService) -> None:
    """The caller's answer of one verdict raises (a bug): that request's future fails with it,
    and the other requests of the batch are answered."""
    first, second = await warmed(start_service)
    expected = [(await first.check(session)).verdict for session in SESSIONS[:3]]
    checks = CheckTasks()
    made: list[Verdict] = []

    def answer(outcome: AccessOutcome) -> AccessOutcome:
        made.append(outcome.verdict)
        if len(made) == 1:
            raise RuntimeError("a bug")
        return outcome

    results = await asyncio.gather(
        *(second.service.check_soon(request(session), answer) for session in SESSIONS[:3]),
        return_exceptions=True,
    )
    assert checks.calls == 0  # one batch, answered in order by the lane
    assert made == expected
    assert isinstance(results[0], RuntimeError)
    assert [r.verdict for r in results[1:] if isinstance(r, AccessOutcome)] == expected[1:]


async def test_a_callback_that_fails_does_not_cost_the_others_their_answers(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    reader = ChainReader(redis_client)
    lookup = ChainLookup("pre:", "rec:", "s", "missing", "then:", "trec:", ":x")
    answered: list[object] = []

    def broken(answer: ChainAnswer | Exception) -> None:
        raise RuntimeError("a bug")

    reader.submit(lookup, broken)
    reader.submit(lookup, answered.append)
    await eventually(lambda: _true(bool(answered)))
    assert answered == [ChainAnswer(None)]
    assert reader.batches == 1
    assert "handing a chained read its answer failed" in caplog.text


async def _true(value: bool) -> bool:
    return value


async def test_an_invalidation_heard_while_the_lane_reads_keeps_its_answer_out_of_l1(
    start_service: StartService, redis_url: str
) -> None:
    """The invalidation bus delivers a customer's invalidation while Redis answers the lane's
    read: the answer still answers the request (the two were concurrent), but neither entry
    is copied into L1, where it could outlive the invalidation."""
    hooked = ScriptHooks()
    _, second = await warmed(start_service, redis_with=hooked_client(redis_url, hooked))
    access = second.service._cache
    sessions = second.service._identity._cache
    assert isinstance(access, LayeredCache)
    assert isinstance(sessions, LayeredCache)
    records = access._l2.generations
    # The bus's message, as it drops the customer's record:
    hooked.hook = lambda: records.forget(access._l2.generation_key("100001"))
    checks = CheckTasks()
    outcome = await soon(second.service, request(PLAIN))
    assert checks.calls == 0
    assert (outcome.verdict, outcome.cache) == (Verdict.GRANTED, "hit")
    assert access.peek("100001:all:premium", customer_id="100001") is None
    assert len(access._l1) == len(sessions._l1) == 0
    # Without the invalidation, the same read lands in L1.
    hooked.hook = None
    await soon(second.service, request(PLAIN))
    assert len(access._l1) == len(sessions._l1) == 1


@pytest.mark.parametrize("session", [PLAIN, "no-such-session-token"])
async def test_a_failing_answer_is_the_futures_failure(
    start_service: StartService, session: str
) -> None:
    """What the caller makes of the verdict fails (a bug in the response): the future fails
    with it, by the lane (an L2 hit) as by check (an unknown session)."""
    _, second = await warmed(start_service)
    checks = CheckTasks()
    made: list[AccessOutcome] = []

    def failing(outcome: AccessOutcome) -> bytes:
        made.append(outcome)
        raise ValueError("cannot make the response")

    with pytest.raises(ValueError, match="cannot make the response"):
        await second.service.check_soon(request(session), failing)
    assert checks.calls == (0 if session == PLAIN else 1)
    assert [outcome.verdict for outcome in made] == [
        Verdict.GRANTED if session == PLAIN else Verdict.UNAUTHENTICATED
    ]
