"""The access service every front-end calls: route -> identity -> cache -> platform -> decision.

Failure policy (DESIGN.md): a platform error never becomes a silent grant. With an access answer
cached and fresh, the platform is not asked at all; expired but within ``stale_if_error``, the
old answer is re-evaluated at now and served marked ``stale``; with nothing usable,
``on_api_error`` decides: ``deny`` -> UNAVAILABLE (503), ``allow`` -> GRANTED with ``fail_open``.
An unknown customer is a denial like any other, cached for ``negative_ttl``.

A cache hit re-uses the decision made for the cached payload while ``now`` is before its
``stable_until`` (the first instant the answer may change), and only then re-evaluates: cheaper
than :func:`evaluate_access` on every request, and equal to it by the core's contract.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, Protocol

from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.routes import RouteKind, RouteTable
from gateway.errors import PlatformUnavailable, UnknownCustomer
from gateway.metrics import Metrics
from gateway.platform.provider import AccessProvider, IdentityProvider
from gateway.service.cache import CacheEntry, Clock, Generation, PayloadCache
from gateway.service.coalesce import Coalescer, LocalCoalescer, stored_answer
from gateway.service.identity import Identity, IdentityResolver
from gateway.service.outcome import (
    AccessOutcome,
    AccessRequest,
    CacheSource,
    Credentials,
    Verdict,
)
from gateway.service.refresh import RefreshAhead
from gateway.service.singleflight import SingleFlight

PUBLIC_OUTCOME = AccessOutcome(Verdict.PUBLIC, "public_route")
ROUTE_DENIED_OUTCOME = AccessOutcome(Verdict.DENIED, "route_denied")
NO_CREDENTIAL_OUTCOME = AccessOutcome(Verdict.UNAUTHENTICATED, "no_credential")
INVALID_CREDENTIAL_OUTCOME = AccessOutcome(Verdict.UNAUTHENTICATED, "invalid_credential")
IDENTITY_UNAVAILABLE_OUTCOME = AccessOutcome(Verdict.UNAVAILABLE, "identity_unavailable")


class Platform(IdentityProvider, AccessProvider, Protocol):
    """Both platform interfaces in one object (what :class:`PlenigoClient` is)."""


class CachedAccess:
    """A cached hasAccess answer for one (customer, rule), with the last decision made from it."""

    __slots__ = ("decided_at", "decision", "payload")

    def __init__(self, payload: AccessPayload, decision: Decision, decided_at: datetime) -> None:
        self.payload = payload
        self.decision = decision
        self.decided_at = decided_at

    def decide(self, rule: AccessRule, now: datetime, policy: ValidityPolicy) -> Decision:
        """The decision at ``now``: the remembered one while it provably holds."""
        decision = self.decision
        if self.decided_at <= now < decision.stable_until:
            return decision
        decision = evaluate_access(self.payload, rule, now, policy)
        self.decision, self.decided_at = decision, now
        return decision


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
        self._refresh_ahead = refresh_ahead
        self._refresh: RefreshAhead[str] = RefreshAhead("access", refresh_ahead, clock, metrics)

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
        if not (credentials.session_token or credentials.transfer_token):
            return NO_CREDENTIAL_OUTCOME
        try:
            identity = await self._identity.resolve(credentials)
        except PlatformUnavailable:
            return IDENTITY_UNAVAILABLE_OUTCOME
        if identity is None:
            return INVALID_CREDENTIAL_OUTCOME
        return await self._decide(identity, match.rule)

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

    async def invalidate_customer(self, customer_id: str, source: str) -> None:
        """Forget every cached access answer of ``customer_id`` (a callback said it changed)."""
        await self._cache.invalidate_customer(customer_id)
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

    async def _decide(self, identity: Identity, rule: AccessRule) -> AccessOutcome:
        customer_id = identity.customer_id
        key = f"{customer_id}:{self._rule_key(rule)}"
        entry = await self._cache.get(key, customer_id=customer_id)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            self._metrics.cache_lookup("access", "hit", entry.tier)
            if now >= entry.fresh_until - self._refresh_ahead:
                # Close to its end: answer from it, and fetch its successor in the background.
                ending = entry.fresh_until
                self._refresh.start(key, lambda: self._load(key, customer_id, rule, ending))
            decision = entry.value.decide(rule, now, self._policy)
            return _answer(decision, identity, "hit", decision.stable_until)
        try:
            fetched = await self._load(key, customer_id, rule)
        except PlatformUnavailable:
            return self._on_error(entry, identity, rule)
        self._metrics.cache_lookup("access", "miss", self._cache.tier)
        now = self._clock()
        decision = fetched.decide(rule, now, self._policy)
        expires_at = decision.stable_until if decision.stable_until > now else None
        return _answer(decision, identity, "miss", expires_at)

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
            return _answer(decision, identity, "stale", None)
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


def _answer(
    decision: Decision, identity: Identity, cache: CacheSource, expires_at: datetime | None
) -> AccessOutcome:
    stale = cache == "stale" or identity.stale
    return AccessOutcome(
        Verdict.GRANTED if decision.granted else Verdict.DENIED,
        decision.reason,
        customer_id=identity.customer_id,
        cache="stale" if stale else cache,
        expires_at=None if stale else expires_at,
        session_token=identity.session_token,
    )
