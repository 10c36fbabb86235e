"""The access service every front-end calls: route -> identity -> cache -> platform -> decision.

Failure policy (DESIGN.md): a platform error never becomes a silent grant. With an access answer
cached and fresh, the platform is not asked at all; expired but within ``stale_if_error``, the
old answer is re-evaluated at now and served marked ``stale``; with nothing usable,
``on_api_error`` decides: ``deny`` -> UNAVAILABLE (503), ``allow`` -> GRANTED with ``fail_open``.
An unknown customer is a denial like any other, cached for ``negative_ttl``.

A cache hit re-uses the decision made for the cached payload while ``now`` is before its
``stable_until`` (the first instant the answer may change), and only then re-evaluates: cheaper
than :func:`evaluate_access` on every request, and equal to it by the core's contract.

:meth:`AccessService.peek` is the synchronous part of :meth:`AccessService.check`, for the WSGI
middleware's worker threads: the answers that need nothing but this process's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from gateway.access.cached import CachedAccess
from gateway.access.identity import Identity, IdentityResolver, SessionPeek
from gateway.access.outcome import (
    AccessOutcome,
    AccessRequest,
    CacheSource,
    Credentials,
    Verdict,
)
from gateway.access.refresh import RefreshAhead
from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.routes import RouteKind, RouteTable
from gateway.errors import PlatformUnavailable, UnknownCustomer
from gateway.metrics import Metrics
from gateway.platform.provider import AccessProvider, IdentityProvider
from gateway.store.cache import CacheEntry, Clock, Generation, PayloadCache, PeekableCache
from gateway.store.coalesce import Coalescer, LocalCoalescer, stored_answer
from gateway.store.companion import CompanionCache, CompanionLookup
from gateway.store.singleflight import SingleFlight

R = TypeVar("R")

PUBLIC_OUTCOME = AccessOutcome(Verdict.PUBLIC, "public_route")
ROUTE_DENIED_OUTCOME = AccessOutcome(Verdict.DENIED, "route_denied")
NO_CREDENTIAL_OUTCOME = AccessOutcome(Verdict.UNAUTHENTICATED, "no_credential")
INVALID_CREDENTIAL_OUTCOME = AccessOutcome(Verdict.UNAUTHENTICATED, "invalid_credential")
IDENTITY_UNAVAILABLE_OUTCOME = AccessOutcome(Verdict.UNAVAILABLE, "identity_unavailable")

Schedule = Callable[[Callable[[], None]], object]
"""Runs a callback on the service's event loop soon, without waiting for it (the WSGI
middleware passes ``loop.call_soon_threadsafe``): how :meth:`AccessService.peek` starts a
refresh-ahead from another thread."""


class Platform(IdentityProvider, AccessProvider, Protocol):
    """Both platform interfaces in one object (what :class:`PlenigoClient` is)."""


AccessCache = PayloadCache[CachedAccess]


class AccessService:
    """Decides one :class:`AccessRequest` at a time; safe for concurrent use on one loop."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        identity: IdentityResolver,
        provider: AccessProvider,
        cache: AccessCache,
        policy: ValidityPolicy,
        clock: Clock,
        metrics: Metrics,
        stale_if_error: timedelta,
        on_api_error: Literal["deny", "allow"] = "deny",
        coalescer: Coalescer | None = None,
        refresh_ahead: timedelta = timedelta(0),
    ) -> None:
        self._routes = routes
        self._identity = identity
        self._provider = provider
        self._cache = cache
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._stale_if_error = stale_if_error
        self._fail_open = on_api_error == "allow"
        self._coalescer: Coalescer = coalescer if coalescer is not None else LocalCoalescer()
        self._fetches: SingleFlight[tuple[str, Generation], CachedAccess] = SingleFlight(
            metrics.coalesced_call
        )
        self._rule_keys: dict[AccessRule, str] = {}
        self._checking: set[asyncio.Future[Any]] = set()  # check_soon's fall-backs to check
        self._refresh_ahead = refresh_ahead
        self._refresh: RefreshAhead[str] = RefreshAhead("access", refresh_ahead, clock, metrics)
        self._peekable: PeekableCache[CachedAccess] | None = (
            cache if isinstance(cache, PeekableCache) else None
        )
        # Announces a request's access lookup to its session lookup: with a shared tier that
        # can chain reads, an L2-only hit is then one round trip (gateway.store.companion).
        self._companions: CompanionCache[CachedAccess] | None = (
            cache if isinstance(cache, CompanionCache) else None
        )

    def peek(
        self, request: AccessRequest, *, schedule: Schedule | None = None
    ) -> AccessOutcome | None:
        """The verdict :meth:`check` would give, if it needs nothing but this process's memory;
        None when only :meth:`check` can tell. For the WSGI middleware, whose worker threads
        answer cached decisions without waiting for the event loop's thread.

        An outcome comes back for a public route (without a transfer token), a deny route, a
        request without credentials, and a session whose validation *and* access answer are
        both fresh in L1 (a rejected session's remembered validation alone suffices). It is
        the outcome :meth:`check` gives for the same request at the same instant, and records
        the same cache-hit metrics; nothing is recorded when it returns None, so the
        :meth:`check` that follows counts the request once.

        * No I/O and no awaiting, ever: an L2 (Redis) entry, a transfer token (a platform
          exchange), a miss or an expired entry all return None.
        * Any thread, while the loop thread uses the same caches: the L1 tier takes a lock
          around each cachetools operation (cachetools is not thread-safe: a lookup reorders an
          ``OrderedDict`` and freezes time in a shared timer), held for microseconds, never
          across an await. A lock rather than handing the lookup to the loop thread: that hop
          is what the synchronous path exists to avoid, and a lock is correct on free-threaded
          builds too. A cached decision is replaced in one step (:class:`CachedAccess`); the
          rule-key memo is a dict whose single get/set is atomic.
        * Refresh-ahead (tasks and bookkeeping belong to the event loop) is never started on
          the calling thread. ``schedule(callback)`` must run ``callback`` on the service's
          loop soon, without waiting (the WSGI driver passes ``loop.call_soon_threadsafe``):
          an entry inside its refresh window (``now >= fresh_until - refresh_ahead``) is then
          answered from, and its refresh started on the loop exactly as :meth:`check` starts
          it (one per key per window: :class:`~gateway.access.refresh.RefreshAhead`). Without
          ``schedule`` such an entry returns None, and :meth:`check` does both.
        """
        match = self._routes.match(request.method, request.path)
        credentials = request.credentials
        if match.kind is RouteKind.PUBLIC:
            return None if credentials.transfer_token else PUBLIC_OUTCOME
        if match.kind is RouteKind.DENY or match.rule is None:
            return ROUTE_DENIED_OUTCOME
        return self.peek_rule(credentials, match.rule, schedule=schedule)

    def peek_rule(
        self, credentials: Credentials, rule: AccessRule, *, schedule: Schedule | None = None
    ) -> AccessOutcome | None:
        """:meth:`check_rule`'s verdict when this process's memory alone gives it, else None;
        the rules of :meth:`peek`."""
        if not (credentials.session_token or credentials.transfer_token):
            return NO_CREDENTIAL_OUTCOME
        now = self._clock()  # one reading for the whole request
        session = self._identity.peek(credentials, with_refresh=schedule is not None, now=now)
        if session is None:
            return None
        if session.identity is None:  # a rejected session, remembered: never refreshed
            self._identity.count_hit(session)
            return INVALID_CREDENTIAL_OUTCOME
        peeked = self._peek_decision(session.identity, rule, schedule is not None, now)
        if peeked is None:
            return None
        outcome, tier, refresh = peeked
        self._identity.count_hit(session)
        self._metrics.cache_lookup("access", "hit", tier)
        if schedule is not None:
            for callback in (session.refresh, refresh):
                if callback is not None:
                    schedule(callback)
        return outcome

    def _peek_decision(
        self, identity: Identity, rule: AccessRule, with_refresh: bool, now: datetime
    ) -> tuple[AccessOutcome, str, Callable[[], None] | None] | None:
        """The hit's outcome, its tier and the refresh to start, from L1 alone; or None."""
        if self._peekable is None:
            return None
        customer_id = identity.customer_id
        key = f"{customer_id}:{self._rule_key(rule)}"
        entry = self._peekable.peek(key, customer_id=customer_id, now=now)
        if entry is None or now >= entry.fresh_until:
            return None
        refresh: Callable[[], None] | None = None
        if now >= entry.fresh_until - self._refresh_ahead:
            if not with_refresh:
                return None
            ending = entry.fresh_until

            def refresh() -> None:
                self._refresh.start(key, lambda: self._load(key, customer_id, rule, ending))

        decision = entry.value.decide(rule, now, self._policy)
        outcome = _answer(decision, identity, "hit", decision.stable_until, now)
        return outcome, entry.tier, refresh

    async def check(self, request: AccessRequest) -> AccessOutcome:
        """The verdict for one request. Never raises for platform trouble: that is a verdict."""
        match = self._routes.match(request.method, request.path)
        credentials = request.credentials
        if match.kind is RouteKind.PUBLIC:
            if credentials.transfer_token:
                return await self._public_login(credentials)
            return PUBLIC_OUTCOME
        if match.kind is RouteKind.DENY or match.rule is None:
            return ROUTE_DENIED_OUTCOME
        return await self.check_rule(credentials, match.rule)

    async def check_rule(self, credentials: Credentials, rule: AccessRule) -> AccessOutcome:
        """The verdict for ``credentials`` against ``rule`` itself, whatever the routes say: a
        per-view rule (the FastAPI dependency, the Flask decorator). Never raises for platform
        trouble."""
        if not (credentials.session_token or credentials.transfer_token):
            return NO_CREDENTIAL_OUTCOME
        rule_key = self._rule_key(rule)
        then = None
        if self._companions is not None:  # the lookup _decide makes: <customer id>:<rule key>
            then = self._companions.companion(f":{rule_key}")
        try:
            identity = await self._identity.resolve(credentials, then=then)
        except PlatformUnavailable:
            return IDENTITY_UNAVAILABLE_OUTCOME
        if identity is None:
            return INVALID_CREDENTIAL_OUTCOME
        return await self._decide(identity, rule, rule_key, then)

    def check_soon(
        self, request: AccessRequest, answer: Callable[[AccessOutcome], R]
    ) -> asyncio.Future[R]:
        """``answer`` of :meth:`check`'s verdict, as a future: for a request :meth:`peek` could
        not answer (the auth endpoint's driver passes the response it makes of a verdict).

        The usual case of a shared tier, a session and its access answer that only Redis
        holds (an L2-only hit), is answered without a task: the session's validation and the
        access answer are read in one round trip, batched with the other lookups of the
        event-loop tick (:meth:`IdentityResolver.resolve_soon`), and decided in the batch's
        callback, with the metrics, L1 copies, refreshes and outcome :meth:`check` gives.
        Anything else (no shared tier, a miss, an entry past its end, a Redis failure, a
        transfer token) is :meth:`check` itself, run as a task: the lane records
        nothing before it knows it can answer, so the request is counted once either way. An
        exception of ``answer`` is the future's."""
        match = self._routes.match(request.method, request.path)
        rule = match.rule
        companions = self._companions
        if match.kind is RouteKind.PROTECTED and rule is not None and companions is not None:
            rule_key = self._rule_key(rule)
            then = companions.companion(f":{rule_key}")
            if then is not None:
                answered = self._lane(request, answer, then, rule, rule_key)
                if answered is not None:
                    return answered
        return asyncio.ensure_future(self._checked(request, answer))

    def _lane(
        self,
        request: AccessRequest,
        answer: Callable[[AccessOutcome], R],
        then: CompanionLookup[CachedAccess],
        rule: AccessRule,
        rule_key: str,
    ) -> asyncio.Future[R] | None:
        """:meth:`check_soon`'s read handed to the batch, and its future; None when the session
        cannot be read that way (nothing started)."""
        answered: asyncio.Future[R] = asyncio.get_running_loop().create_future()

        def resolved(peeked: SessionPeek | None) -> None:
            try:
                if peeked is not None:
                    decided = self._decide_soon(peeked, then, rule, rule_key)
                    if decided is not None:
                        if not answered.done():
                            answered.set_result(answer(decided))
                        return
                checking = asyncio.ensure_future(self._checked(request, answer))
                # Held until it ends: the loop keeps only a weak reference to a task.
                self._checking.add(checking)
                checking.add_done_callback(self._checking.discard)
                _follow(answered, checking)
            except Exception as exc:  # a bug: the request's answer fails, not the batch
                if not answered.done():
                    answered.set_exception(exc)

        if not self._identity.resolve_soon(request.credentials, then=then, done=resolved):
            return None
        return answered

    async def _checked(self, request: AccessRequest, answer: Callable[[AccessOutcome], R]) -> R:
        return answer(await self.check(request))

    def _decide_soon(
        self,
        peeked: SessionPeek,
        then: CompanionLookup[CachedAccess],
        rule: AccessRule,
        rule_key: str,
    ) -> AccessOutcome | None:
        """:meth:`_decide` for a session answered by :meth:`IdentityResolver.resolve_soon`,
        when ``then`` holds the access answer fresh: both hits counted, the refreshes of
        entries inside their refresh window started, as :meth:`check` does; None, having
        counted and started nothing, when only :meth:`check` can tell."""
        identity = peeked.identity
        if identity is None:
            return None
        customer_id = identity.customer_id
        key = f"{customer_id}:{rule_key}"
        known, entry = then.take(key, customer_id=customer_id)
        if not known or entry is None:
            return None
        now = self._clock()
        if now >= entry.fresh_until:
            return None
        self._identity.count_hit(peeked)
        if peeked.refresh is not None:
            peeked.refresh()
        return self._hit(entry, identity, rule, key, now)

    def _hit(
        self,
        entry: CacheEntry[CachedAccess],
        identity: Identity,
        rule: AccessRule,
        key: str,
        now: datetime,
    ) -> AccessOutcome:
        """The answer from a cached access answer fresh at ``now``: counted as a hit of its
        tier, its successor fetched in the background when it is close to its end."""
        self._metrics.cache_lookup("access", "hit", entry.tier)
        if now >= entry.fresh_until - self._refresh_ahead:
            # Close to its end: answer from it, and fetch its successor in the background.
            customer_id, ending = identity.customer_id, entry.fresh_until
            self._refresh.start(key, lambda: self._load(key, customer_id, rule, ending))
        decision = entry.value.decide(rule, now, self._policy)
        return _answer(decision, identity, "hit", decision.stable_until, now)

    async def login(self, transfer_token: str) -> Identity | None:
        """Exchange a transfer token for a session: the identity, or None if the token is not
        valid (used, expired, unknown). Raises :class:`PlatformUnavailable`."""
        return await self._identity.resolve(Credentials(transfer_token=transfer_token))

    async def _public_login(self, credentials: Credentials) -> AccessOutcome:
        # A login hand-off may land on a public page (the home page): the visitor still gets
        # the session. Nothing to decide, so platform trouble only costs the login.
        try:
            identity = await self._identity.resolve(credentials)
        except PlatformUnavailable:
            return PUBLIC_OUTCOME
        if identity is None or identity.session_token is None:
            return PUBLIC_OUTCOME
        return AccessOutcome(
            Verdict.PUBLIC,
            "public_route",
            customer_id=identity.customer_id,
            session_token=identity.session_token,
        )

    # The invalidation API (callbacks, admin). Each applies to this process, the shared tier
    # and, through the invalidation bus, every other process; a Redis failure propagates, so
    # the caller can answer "not done" (a webhook is then retried by the platform).

    async def invalidate_customer(
        self, customer_id: str, source: str, *, sessions: bool = False
    ) -> None:
        """Forget every cached access answer of ``customer_id`` (a callback said it changed);
        with ``sessions``, also every cached validation of the customer's sessions (the
        customer changed or was deleted), so each of them is asked about again."""
        await self._cache.invalidate_customer(customer_id)
        if sessions:
            await self._identity.invalidate_customer_sessions(customer_id)
        self._metrics.invalidation(source)

    async def invalidate_session(self, token_hash: str, source: str) -> None:
        """Forget the validation of one session, named by the SHA-256 (hex) of its token (a
        logout). Raises ValueError for anything but 64 hex digits."""
        await self._identity.invalidate_session(token_hash)
        self._metrics.invalidation(source)

    async def invalidate_all(self, source: str) -> None:
        """Forget every cached access answer and session validation."""
        await self._cache.invalidate_all()
        await self._identity.invalidate_all()
        self._metrics.invalidation(source)

    async def _decide(
        self,
        identity: Identity,
        rule: AccessRule,
        rule_key: str,
        then: CompanionLookup[CachedAccess] | None = None,
    ) -> AccessOutcome:
        """``rule_key``: :meth:`_rule_key` of ``rule``."""
        customer_id = identity.customer_id
        key = f"{customer_id}:{rule_key}"
        if then is not None:  # announced to the session lookup: it may have the answer already
            entry = await then.get(key, customer_id=customer_id)
        else:
            entry = await self._cache.get(key, customer_id=customer_id)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            return self._hit(entry, identity, rule, key, now)
        try:
            fetched = await self._load(key, customer_id, rule)
        except PlatformUnavailable:
            return self._on_error(entry, identity, rule)
        self._metrics.cache_lookup("access", "miss", self._cache.tier)
        now = self._clock()
        decision = fetched.decide(rule, now, self._policy)
        expires_at = decision.stable_until if decision.stable_until > now else None
        return _answer(decision, identity, "miss", expires_at, now)

    async def _load(
        self, key: str, customer_id: str, rule: AccessRule, ending: datetime | None = None
    ) -> CachedAccess:
        """The answer for ``key`` from the platform, stored in the cache: one fetch per key and
        generation across requests (and a refresh) in this process, and across processes.
        A refresh passes the ``fresh_until`` of the entry it replaces as ``ending``. Raises
        :class:`PlatformUnavailable`."""
        # The generation seen now goes with the fetch: if the customer is invalidated while the
        # platform answers, the answer is stored under the old generation (unreachable), and
        # requests arriving after the invalidation start a fetch of their own.
        generation = await self._cache.generation(customer_id)
        return await self._fetches.run(
            (key, generation),
            lambda: self._coalescer.run(
                key,
                lambda: self._fetch(key, customer_id, rule, generation),
                lambda: stored_answer(self._cache, key, customer_id, self._clock, ending),
            ),
        )

    async def _fetch(
        self, key: str, customer_id: str, rule: AccessRule, generation: Generation
    ) -> CachedAccess:
        try:
            payload = await self._provider.check_access(customer_id, rule.access_right_ids)
        except UnknownCustomer:
            payload = AccessPayload.no_access(customer_id, self._clock())
        now = self._clock()
        decision = evaluate_access(payload, rule, now, self._policy)
        value = CachedAccess(payload, decision, now)
        if decision.cacheable and now < decision.valid_until:
            stale_until = decision.valid_until + self._stale_if_error
            entry = CacheEntry(value, decision.valid_until, stale_until)
            await self._cache.set(key, entry, customer_id=customer_id, generation=generation)
        return value

    def _on_error(
        self, entry: CacheEntry[CachedAccess] | None, identity: Identity, rule: AccessRule
    ) -> AccessOutcome:
        now = self._clock()
        if entry is not None and now < entry.stale_until:
            self._metrics.cache_lookup("access", "stale", entry.tier)
            decision = evaluate_access(entry.value.payload, rule, now, self._policy)
            return _answer(decision, identity, "stale", None, now)
        self._metrics.cache_lookup("access", "miss", self._cache.tier)
        if self._fail_open:
            return AccessOutcome(
                Verdict.GRANTED,
                "platform_unavailable",
                customer_id=identity.customer_id,
                session_token=identity.session_token,
                fail_open=True,
            )
        return AccessOutcome(
            Verdict.UNAVAILABLE,
            "platform_unavailable",
            customer_id=identity.customer_id,
            session_token=identity.session_token,
        )

    async def close(self) -> None:
        """Cancel the background refreshes (access answers and sessions) and wait for them:
        the app calls it at shutdown, before the platform client closes."""
        await self._refresh.close()
        await self._identity.close()

    def _rule_key(self, rule: AccessRule) -> str:
        # The payload depends on the set of ids; its validity also on ``require``.
        key = self._rule_keys.get(rule)
        if key is None:
            key = self._rule_keys[rule] = (
                f"{rule.require}:{','.join(sorted(rule.access_right_ids))}"
            )
        return key


def _follow(outcome: asyncio.Future[R], check: asyncio.Future[R]) -> None:
    """``outcome`` gets what ``check`` gives."""

    def copy(done: asyncio.Future[R]) -> None:
        if outcome.done():
            return
        if done.cancelled():
            outcome.cancel()
        elif (failure := done.exception()) is not None:
            outcome.set_exception(failure)
        else:
            outcome.set_result(done.result())

    check.add_done_callback(copy)


def _answer(
    decision: Decision,
    identity: Identity,
    cache: CacheSource,
    expires_at: datetime | None,
    now: datetime,
) -> AccessOutcome:
    stale = cache == "stale" or identity.stale
    return AccessOutcome(
        Verdict.GRANTED if decision.granted else Verdict.DENIED,
        decision.reason,
        identity.customer_id,
        "stale" if stale else cache,
        None if stale else expires_at,
        identity.session_token,
        False,
        now,
    )
