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

import struct
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, time, timedelta
from typing import Literal, Protocol

from gateway.access.identity import Identity, IdentityResolver
from gateway.access.outcome import (
    AccessOutcome,
    AccessRequest,
    CacheSource,
    Credentials,
    Verdict,
)
from gateway.access.refresh import RefreshAhead
from gateway.core.decision import Decision, evaluate_access
from gateway.core.payload import AccessItem, AccessPayload
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.core.routes import RouteKind, RouteTable
from gateway.errors import PlatformUnavailable, UnknownCustomer
from gateway.metrics import Metrics
from gateway.platform.provider import AccessProvider, IdentityProvider
from gateway.store.cache import CacheEntry, Clock, Generation, PayloadCache, PeekableCache
from gateway.store.coalesce import Coalescer, LocalCoalescer, stored_answer
from gateway.store.companion import CompanionCache, CompanionLookup
from gateway.store.singleflight import SingleFlight

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


class CachedAccess(Decision):
    """A cached hasAccess answer for one (customer, rule), with the last decision made from it.

    An L1 cache holds one per cached answer, so it is built small:

    * It *is* its first decision (a :class:`Decision` subclass holding that decision's fields),
      which saves the separate object and the tuple pairing it with its instant; ``decide``
      returns the object itself while that decision holds. Compared by identity, not as a
      decision.
    * The payload is kept packed (:func:`_pack_payload`: one bytes object of some 70 bytes for
      a one-item answer instead of some 330 in five to seven objects) and :attr:`payload`
      rebuilds it. Only a re-evaluation (``now`` past the last decision's ``stable_until``, or
      before its instant), a stale answer and the Redis codec read it; a hit never does.

    The last decision and its instant are read and replaced in one step (``_last``: the first
    decision's instant, later a (decision, instant) tuple): ``decide`` also runs on other
    threads than the loop's (:meth:`AccessService.peek`), and two attributes could be seen
    half-replaced. A race only costs a second evaluation: every caller gets either a decision
    whose stable interval holds its ``now`` or one evaluated at its ``now``.
    """

    __slots__ = ("_last", "_payload")

    _last: datetime | tuple[Decision, datetime]
    _payload: bytes | AccessPayload

    def __init__(self, payload: AccessPayload, decision: Decision, decided_at: datetime) -> None:
        setter = object.__setattr__  # a Decision is frozen
        for name in _DECISION_FIELDS:
            setter(self, name, getattr(decision, name))
        setter(self, "_payload", _pack_payload(payload))
        setter(self, "_last", decided_at)

    @property
    def payload(self) -> AccessPayload:
        """The platform's answer: equal to the one given (its instants rebuilt in UTC)."""
        packed = self._payload
        return _unpack_payload(packed) if isinstance(packed, bytes) else packed

    @property
    def decision(self) -> Decision:
        last = self._last
        return last[0] if isinstance(last, tuple) else self

    @property
    def decided_at(self) -> datetime:
        last = self._last
        return last[1] if isinstance(last, tuple) else last

    def decide(self, rule: AccessRule, now: datetime, policy: ValidityPolicy) -> Decision:
        """The decision at ``now``: the remembered one while it provably holds."""
        last = self._last
        if isinstance(last, tuple):
            decision, decided_at = last
        else:
            decision, decided_at = self, last
        if decided_at <= now < decision.stable_until:
            return decision
        decision = evaluate_access(self.payload, rule, now, policy)
        object.__setattr__(self, "_last", (decision, now))
        return decision

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        decision = self.decision
        shown = Decision(*(getattr(decision, name) for name in _DECISION_FIELDS))
        return f"CachedAccess({self.payload!r}, {shown!r}, {self.decided_at!r})"

    def __reduce__(self) -> tuple[object, ...]:
        decision = self.decision
        plain = Decision(*(getattr(decision, name) for name in _DECISION_FIELDS))
        return (CachedAccess, (self.payload, plain, self.decided_at))


_DECISION_FIELDS = tuple(field.name for field in fields(Decision))


# The packed payload (CachedAccess), only ever in this process's memory: a header, the customer
# id, then per item a header, its id and one signed 64-bit integer per bound it has. Instants
# are microseconds since the epoch (exact; rebuilt in UTC, to which the core converts every
# instant anyway), window times microseconds of the day.
_HEAD = struct.Struct("<BqHH")  # customer_blocked | granted << 1, fetched_at, len(id), items
_ITEM = struct.Struct("<BBH")  # granted | blocked << 1, which bounds are present, len(id)
_BOUND = struct.Struct("<q")
_BOUNDS = (  # AccessItem's optional fields, in its order; True: an instant, False: a time
    ("lifetime_start", True),
    ("lifetime_end", True),
    ("window_start", False),
    ("window_end", False),
    ("pause_start", True),
    ("pause_end", True),
    ("max_cache_date", True),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _flags(first: object, second: object) -> int:
    if type(first) is not bool or type(second) is not bool:
        raise TypeError("not a bool")
    return first | second << 1


def _pack_payload(payload: AccessPayload) -> bytes | AccessPayload:
    """``payload`` packed; itself when packing would lose something (a naive datetime, a
    window time with a time zone or a fold, a flag that is not a bool: nothing the platform
    adapter makes)."""
    try:
        parts = [b""]
        for item in payload.items:
            present = 0
            bounds = []
            for bit, (name, is_instant) in enumerate(_BOUNDS):
                bound = getattr(item, name)
                if bound is None:
                    continue
                present |= 1 << bit
                if is_instant:
                    bounds.append(_BOUND.pack((bound - _EPOCH) // _MICROSECOND))
                elif bound.tzinfo is not None or bound.fold:
                    return payload
                else:
                    seconds = (bound.hour * 60 + bound.minute) * 60 + bound.second
                    bounds.append(_BOUND.pack(seconds * 1_000_000 + bound.microsecond))
            access_right_id = item.access_right_id.encode()
            flags = _flags(item.granted, item.blocked)
            head = _ITEM.pack(flags, present, len(access_right_id))
            parts.append(head + access_right_id + b"".join(bounds))
        customer = payload.customer_id.encode()
        flags = _flags(payload.customer_blocked, payload.granted)
        fetched_at = (payload.fetched_at - _EPOCH) // _MICROSECOND
        parts[0] = _HEAD.pack(flags, fetched_at, len(customer), len(payload.items)) + customer
        return b"".join(parts)
    except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
        return payload  # naive datetimes, out-of-range numbers, not a str: kept as it is


def _unpack_payload(packed: bytes) -> AccessPayload:
    """The :class:`AccessPayload` that :func:`_pack_payload` packed."""
    flags, fetched_at, length, count = _HEAD.unpack_from(packed)
    offset = _HEAD.size + length
    customer_id = packed[_HEAD.size : offset].decode()
    items = []
    for _ in range(count):
        item_flags, present, length = _ITEM.unpack_from(packed, offset)
        offset += _ITEM.size
        access_right_id = packed[offset : offset + length].decode()
        offset += length
        bounds: list[datetime | time | None] = []
        for bit, (_, is_instant) in enumerate(_BOUNDS):
            if not present & (1 << bit):
                bounds.append(None)
                continue
            (number,) = _BOUND.unpack_from(packed, offset)
            offset += _BOUND.size
            if is_instant:
                bounds.append(_EPOCH + number * _MICROSECOND)
            else:
                seconds, microsecond = divmod(number, 1_000_000)
                minutes, second = divmod(seconds, 60)
                hour, minute = divmod(minutes, 60)
                bounds.append(time(hour, minute, second, microsecond))
        granted, blocked = bool(item_flags & 1), bool(item_flags & 2)
        # ``bounds`` is in AccessItem's field order (_BOUNDS), each of its field's type.
        items.append(AccessItem(access_right_id, granted, blocked, *bounds))  # type: ignore[arg-type]
    fetched = _EPOCH + fetched_at * _MICROSECOND
    return AccessPayload(customer_id, bool(flags & 1), bool(flags & 2), tuple(items), fetched)


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
        then = None
        if self._companions is not None:  # the lookup _decide makes: <customer id>:<rule key>
            then = self._companions.companion(f":{self._rule_key(rule)}")
        try:
            identity = await self._identity.resolve(credentials, then=then)
        except PlatformUnavailable:
            return IDENTITY_UNAVAILABLE_OUTCOME
        if identity is None:
            return INVALID_CREDENTIAL_OUTCOME
        return await self._decide(identity, rule, then)

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
        then: CompanionLookup[CachedAccess] | None = None,
    ) -> AccessOutcome:
        customer_id = identity.customer_id
        key = f"{customer_id}:{self._rule_key(rule)}"
        if then is not None:  # announced to the session lookup: it may have the answer already
            entry = await then.get(key, customer_id=customer_id)
        else:
            entry = await self._cache.get(key, customer_id=customer_id)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            self._metrics.cache_lookup("access", "hit", entry.tier)
            if now >= entry.fresh_until - self._refresh_ahead:
                # Close to its end: answer from it, and fetch its successor in the background.
                ending = entry.fresh_until
                self._refresh.start(key, lambda: self._load(key, customer_id, rule, ending))
            decision = entry.value.decide(rule, now, self._policy)
            return _answer(decision, identity, "hit", decision.stable_until, now)
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
