"""Who is asking: credentials -> customer id, with caching and single-flight.

* Session validations are cached under a SHA-256 of the token for ``session_ttl``; invalid
  sessions are remembered for ``invalid_session_ttl``, so a flood of random tokens costs one
  platform call per distinct token per period, not one per request.
* Concurrent validations of one token, and concurrent exchanges of one transfer token, share
  one platform call. Transfer tokens are never cached: they are one-time.
* A transfer token that is invalid (used, expired, unknown) falls back to the session token the
  request may also carry: a bookmarked link with a stale ``transferToken`` must not log out a
  visitor whose cookie is fine.
* Platform failures raise :class:`~gateway.errors.PlatformUnavailable`, unless a valid session's
  entry is still within ``stale_if_error``. Identity cannot fail open: without a customer id
  there is nothing to decide with, so the service answers UNAVAILABLE.
* :meth:`IdentityResolver.peek` is the synchronous, any-thread part of :meth:`resolve`: a fresh
  validation in this process's memory, or "cannot tell" (see
  :meth:`~gateway.access.service.AccessService.peek`).
* :meth:`IdentityResolver.resolve` takes the lookup its caller makes next (``then``, the access
  answer: :mod:`~gateway.store.companion`) and hands it to the session cache, which may read
  its answer in the same round trip. It is kept only when the session is answered from that
  read; when the platform has to be asked first, the follow-up makes a lookup of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.access.outcome import Credentials
from gateway.access.refresh import RefreshAhead
from gateway.errors import InvalidSession, InvalidTransferToken, PlatformUnavailable
from gateway.metrics import Metrics
from gateway.platform.provider import IdentityProvider
from gateway.store.cache import (
    CacheEntry,
    Clock,
    Generation,
    PayloadCache,
    PeekableCache,
    sessions_scope,
)
from gateway.store.coalesce import Coalescer, LocalCoalescer, stored_answer
from gateway.store.companion import ChainingCache, CompanionLookup
from gateway.store.keys import digest_key, token_key
from gateway.store.singleflight import SingleFlight

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

SessionCache = PayloadCache[str | None]
"""Session-token hash -> customer id, or None for a session the platform rejected."""


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class Identity:
    """A resolved visitor. ``session_token`` is set when it was just exchanged from a transfer
    token (the front-end sets it as the cookie); ``stale`` when served from an expired entry."""

    customer_id: str
    session_token: str | None = None
    stale: bool = False

    def __init__(
        self, customer_id: str, session_token: str | None = None, stale: bool = False
    ) -> None:
        self.customer_id = customer_id
        self.session_token = session_token
        self.stale = stale


@dataclass(slots=True, init=False)  # built per request (see gateway.access.outcome)
class SessionPeek:
    """What this process's session cache alone says about a session token: ``identity`` (None:
    a token the platform rejected, remembered), the ``tier`` that answered (for the lookup
    metric, counted by :meth:`IdentityResolver.count_hit` once the caller answers from it), and
    ``refresh``: for an entry inside its refresh window, what :meth:`IdentityResolver.resolve`
    would start, to be called on the event loop (it creates the refresh task there)."""

    identity: Identity | None
    tier: str
    refresh: Callable[[], None] | None = None

    def __init__(
        self, identity: Identity | None, tier: str, refresh: Callable[[], None] | None = None
    ) -> None:
        self.identity = identity
        self.tier = tier
        self.refresh = refresh


class IdentityResolver:
    """Turns :class:`Credentials` into an :class:`Identity` (or None: no valid credential)."""

    def __init__(
        self,
        provider: IdentityProvider,
        cache: SessionCache,
        clock: Clock,
        metrics: Metrics,
        *,
        session_ttl: timedelta,
        invalid_session_ttl: timedelta,
        stale_if_error: timedelta,
        coalescer: Coalescer | None = None,
        refresh_ahead: timedelta = timedelta(0),
    ) -> None:
        self._provider = provider
        self._cache = cache
        self._clock = clock
        self._metrics = metrics
        self._session_ttl = session_ttl
        self._invalid_ttl = invalid_session_ttl
        self._stale_if_error = stale_if_error
        self._coalescer: Coalescer = coalescer if coalescer is not None else LocalCoalescer()
        self._validations: SingleFlight[tuple[str, Generation], str | None] = SingleFlight(
            metrics.coalesced_call
        )
        self._exchanges: SingleFlight[str, str | None] = SingleFlight(metrics.coalesced_call)
        self._refresh_ahead = refresh_ahead
        self._refresh: RefreshAhead[str] = RefreshAhead("session", refresh_ahead, clock, metrics)
        self._peekable: PeekableCache[str | None] | None = (
            cache if isinstance(cache, PeekableCache) else None
        )
        self._chaining: ChainingCache[str | None] | None = (
            cache if isinstance(cache, ChainingCache) else None
        )
        # The last session token's cache key (_session_key), replaced in one step: peek also
        # runs on other threads than the loop's, and a race only costs the hash again.
        self._last_key = ("", token_key("session", ""))

    def _session_key(self, token: str) -> str:
        """``token_key("session", token)``, remembered for the last token object: a request
        that L1 cannot answer looks its session up twice or more (:meth:`peek`, then
        :meth:`resolve_soon` or :meth:`resolve`) with the very same ``str``, and the SHA-256
        is the dearest part of a lookup that misses. Compared by identity, so another request
        with an equal token only costs the hash."""
        last = self._last_key
        if last[0] is token:
            return last[1]
        key = token_key("session", token)
        self._last_key = (token, key)
        return key

    def peek(
        self,
        credentials: Credentials,
        *,
        with_refresh: bool = False,
        now: datetime | None = None,
    ) -> SessionPeek | None:
        """The session's validation if this process holds it fresh in memory, without awaiting
        or I/O, from any thread; None when only :meth:`resolve` can tell: a transfer token
        (exchanging it is a platform call), no session token, no fresh entry in memory. A valid
        session inside its refresh-ahead window is None too, unless ``with_refresh``: the
        caller then runs :attr:`SessionPeek.refresh` on the event loop, which starts the
        refresh exactly as :meth:`resolve` would. Counts nothing: see :class:`SessionPeek`.
        ``now``: the caller's clock reading for this request, if it has one."""
        token = credentials.session_token
        if credentials.transfer_token or not token or self._peekable is None:
            return None
        if now is None:
            now = self._clock()
        key = self._session_key(token)
        entry = self._peekable.peek(key, customer_id=key, now=now)
        if entry is None or now >= entry.fresh_until:
            return None
        refresh: Callable[[], None] | None = None
        if entry.value is not None:
            refresh = self._refresher(entry, key, token, now)
            if refresh is not None and not with_refresh:
                return None
        identity = None if entry.value is None else Identity(entry.value)
        return SessionPeek(identity, entry.tier, refresh)

    def _refresher(
        self, entry: CacheEntry[str | None], key: str, token: str, now: datetime
    ) -> Callable[[], None] | None:
        """For a valid session's entry inside its refresh-ahead window at ``now``, what
        :meth:`resolve` starts: a validation in the background, to be called on the event
        loop; None outside the window."""
        if now < entry.fresh_until - self._refresh_ahead:
            return None
        ending = entry.fresh_until

        def refresh() -> None:
            self._refresh.start(key, lambda: self._validation(key, token, ending))

        return refresh

    def count_hit(self, peeked: SessionPeek) -> None:
        """Count a peeked validation as the cache hit :meth:`resolve` would have counted."""
        self._metrics.cache_lookup("session", "hit", peeked.tier)

    async def resolve(
        self, credentials: Credentials, *, then: CompanionLookup[Any] | None = None
    ) -> Identity | None:
        """The visitor's identity; None when no credential is valid.

        ``then``: the lookup the caller makes next with the customer id (module docstring).
        Raises :class:`PlatformUnavailable` when the platform fails and nothing cached helps.
        """
        if credentials.transfer_token:
            session_token = await self._exchange(credentials.transfer_token)
            if session_token is not None:
                identity = await self._session(session_token, then)
                if identity is not None:
                    return Identity(identity.customer_id, session_token, identity.stale)
        if credentials.session_token:
            return await self._session(credentials.session_token, then)
        return None

    def resolve_soon(
        self,
        credentials: Credentials,
        *,
        then: CompanionLookup[Any],
        done: Callable[[SessionPeek | None], None],
    ) -> bool:
        """:meth:`resolve` of a session that this process's memory does not hold, without a
        task: reads the session's validation with ``then``'s entry in one round trip and
        returns True; ``done`` then gets, on the loop, the valid session's identity as
        :meth:`peek` gives it (the tier that answered, counted by :meth:`count_hit` once the
        caller answers from it; inside its refresh window, the refresh to start then), or None
        when only :meth:`resolve` can tell: no fresh valid entry in Redis (a miss, a rejected
        session), or a read that failed. Nothing is counted or started by it, so the
        :meth:`resolve` that follows counts the request once. False, and nothing started, for
        anything else than a session token alone, or a session cache that cannot read that
        way."""
        token = credentials.session_token
        chaining = self._chaining
        if credentials.transfer_token or not token or chaining is None:
            return False
        key = self._session_key(token)

        def answered(known: bool, entry: CacheEntry[str | None] | None) -> None:
            if not known or entry is None or entry.value is None:
                done(None)
                return
            now = self._clock()
            if now >= entry.fresh_until:
                done(None)
                return
            refresh = self._refresher(entry, key, token, now)
            done(SessionPeek(Identity(entry.value), entry.tier, refresh))

        return chaining.get_chained_soon(key, customer_id=key, then=then, done=answered)

    async def _exchange(self, transfer_token: str) -> str | None:
        async def exchange() -> str | None:
            try:
                return await self._provider.exchange_transfer_token(transfer_token)
            except InvalidTransferToken:
                return None

        # Keyed by the hash too: the flight table must not hold credentials either.
        return await self._exchanges.run(token_key("transfer", transfer_token), exchange)

    async def _session(
        self, token: str, then: CompanionLookup[Any] | None = None
    ) -> Identity | None:
        key = self._session_key(token)
        # A session's entry is scoped to its own key: invalidate_session drops it in O(1), also
        # in every other process, and a validation in flight at that moment is not stored.
        if then is not None and self._chaining is not None:
            entry = await self._chaining.get_chained(key, customer_id=key, then=then)
        else:
            entry = await self._cache.get(key, customer_id=key)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            self._metrics.cache_lookup("session", "hit", entry.tier)
            if entry.value is None:
                # A rejected token is never refreshed: nobody's visits wait on those, and they
                # must not cost more calls.
                return None
            # Close to its end: answer from it, and validate again in the background.
            refresh = self._refresher(entry, key, token, now)
            if refresh is not None:
                refresh()
            return Identity(entry.value)
        if then is not None:
            then.discard()  # read before a platform call: the follow-up reads for itself
        try:
            customer_id = await self._validation(key, token)
        except PlatformUnavailable:
            if entry is not None and entry.value is not None and now < entry.stale_until:
                self._metrics.cache_lookup("session", "stale", entry.tier)
                return Identity(entry.value, stale=True)
            self._metrics.cache_lookup("session", "miss", self._cache.tier)
            raise
        self._metrics.cache_lookup("session", "miss", self._cache.tier)
        return None if customer_id is None else Identity(customer_id)

    async def _validation(self, key: str, token: str, ending: datetime | None = None) -> str | None:
        """One platform validation of ``token`` per generation, across requests (and a refresh,
        which passes the ``fresh_until`` of the entry it replaces as ``ending``) and processes;
        the answer is cached. Raises :class:`PlatformUnavailable`."""
        generation = await self._cache.generation(key)
        return await self._validations.run(
            (key, generation),
            lambda: self._coalescer.run(
                key,
                lambda: self._validate(key, token, generation),
                lambda: stored_answer(self._cache, key, key, self._clock, ending),
            ),
        )

    async def _validate(self, key: str, token: str, generation: Generation) -> str | None:
        try:
            customer_id = await self._provider.customer_for_session(token)
        except InvalidSession:
            until = self._clock() + self._invalid_ttl
            entry: CacheEntry[str | None] = CacheEntry(None, until, until)
        else:
            until = self._clock() + self._session_ttl
            # Owned by the customer: invalidate_customer_sessions ends it without knowing it.
            entry = CacheEntry(
                customer_id, until, until + self._stale_if_error, owner=sessions_scope(customer_id)
            )
        await self._cache.set(key, entry, customer_id=key, generation=generation)
        return entry.value

    async def invalidate_session(self, token_hash: str) -> None:
        """Forget the validation of the session whose token has this SHA-256 (hex)."""
        if not _SHA256_HEX.fullmatch(token_hash):
            raise ValueError("a session is named by the SHA-256 of its token, 64 hex digits")
        await self._cache.invalidate_customer(digest_key("session", token_hash.lower()))

    async def invalidate_customer_sessions(self, customer_id: str) -> None:
        """Forget every cached validation of ``customer_id``'s sessions, in O(1): each one is
        owned by :func:`~gateway.store.cache.sessions_scope` of its customer (see
        :mod:`gateway.store.cache`), and this moves that scope to a new generation in every
        tier and, through the invalidation bus, every process. A remembered *rejection* has no
        customer and is not affected (it stays a rejection)."""
        await self._cache.invalidate_customer(sessions_scope(customer_id))

    async def invalidate_all(self) -> None:
        """Forget every session validation."""
        await self._cache.invalidate_all()

    async def close(self) -> None:
        """Cancel the background session refreshes and wait for them."""
        await self._refresh.close()
