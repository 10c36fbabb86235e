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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.errors import InvalidSession, InvalidTransferToken, PlatformUnavailable
from gateway.metrics import Metrics
from gateway.platform.provider import IdentityProvider
from gateway.service.cache import CacheEntry, Clock, PayloadCache, token_key
from gateway.service.coalesce import Coalescer, Found, LocalCoalescer
from gateway.service.outcome import Credentials
from gateway.service.singleflight import SingleFlight

SessionCache = PayloadCache[str | None]
"""Session-token hash -> customer id, or None for a session the platform rejected."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A resolved visitor. ``session_token`` is set when it was just exchanged from a transfer
    token (the front-end sets it as the cookie); ``stale`` when served from an expired entry."""

    customer_id: str
    session_token: str | None = None
    stale: bool = False


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
    ) -> None:
        self._provider = provider
        self._cache = cache
        self._clock = clock
        self._metrics = metrics
        self._session_ttl = session_ttl
        self._invalid_ttl = invalid_session_ttl
        self._stale_if_error = stale_if_error
        self._coalescer: Coalescer = coalescer if coalescer is not None else LocalCoalescer()
        self._validations: SingleFlight[str, str | None] = SingleFlight(metrics.coalesced_call)
        self._exchanges: SingleFlight[str, str | None] = SingleFlight(metrics.coalesced_call)

    async def resolve(self, credentials: Credentials) -> Identity | None:
        """The visitor's identity; None when no credential is valid.

        Raises :class:`PlatformUnavailable` when the platform fails and nothing cached helps.
        """
        if credentials.transfer_token:
            session_token = await self._exchange(credentials.transfer_token)
            if session_token is not None:
                identity = await self._session(session_token)
                if identity is not None:
                    return Identity(identity.customer_id, session_token, identity.stale)
        if credentials.session_token:
            return await self._session(credentials.session_token)
        return None

    async def _exchange(self, transfer_token: str) -> str | None:
        async def exchange() -> str | None:
            try:
                return await self._provider.exchange_transfer_token(transfer_token)
            except InvalidTransferToken:
                return None

        # Keyed by the hash too: the flight table must not hold credentials either.
        return await self._exchanges.run(token_key("transfer", transfer_token), exchange)

    async def _session(self, token: str) -> Identity | None:
        key = token_key("session", token)
        entry = await self._cache.get(key)
        now = self._clock()
        if entry is not None and now < entry.fresh_until:
            self._metrics.cache_lookup("session", "hit")
            return None if entry.value is None else Identity(entry.value)
        try:
            customer_id = await self._validations.run(
                key,
                lambda: self._coalescer.run(
                    key, lambda: self._validate(key, token), lambda: self._stored(key)
                ),
            )
        except PlatformUnavailable:
            if entry is not None and entry.value is not None and now < entry.stale_until:
                self._metrics.cache_lookup("session", "stale")
                return Identity(entry.value, stale=True)
            self._metrics.cache_lookup("session", "miss")
            raise
        self._metrics.cache_lookup("session", "miss")
        return None if customer_id is None else Identity(customer_id)

    async def _stored(self, key: str) -> Found[str | None] | None:
        """A fresh validation another process stored meanwhile (cross-process coalescing)."""
        entry = await self._cache.get(key)
        if entry is not None and self._clock() < entry.fresh_until:
            return Found(entry.value)
        return None

    async def _validate(self, key: str, token: str) -> str | None:
        try:
            customer_id = await self._provider.customer_for_session(token)
        except InvalidSession:
            until = self._clock() + self._invalid_ttl
            await self._cache.set(key, CacheEntry(None, until, until))
            return None
        until = self._clock() + self._session_ttl
        await self._cache.set(key, CacheEntry(customer_id, until, until + self._stale_if_error))
        return customer_id
