"""Announcing the lookup that follows: a session's validation, then the customer's access answer.

Every gated request looks up two cache entries, the second keyed by what the first one says:
the session's validation (by its token's hash) names the customer, and the access answer is
``<customer id>:<rule>``, scoped to the customer. A tier that can read both in one go (the
shared Redis tier, see :mod:`~gateway.store.redis_chain`) must hear of the second lookup
before the first one is made. The access service therefore asks its access cache for a
:class:`CompanionLookup` (``<customer id><suffix>``, whoever the customer turns out to be),
hands it to the identity resolver with the session lookup (:meth:`ChainingCache.get_chained`),
and then makes the access lookup through it. What the session's read brought along answers
that lookup; without it (an L1 hit, no shared tier, a Cluster, another customer) the companion
simply asks its cache. Nothing above the caches changes meaning: each lookup answers exactly
what its cache would have answered, and is counted the same.

Only protocols here: the access service and the identity resolver know no tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from gateway.store.cache import CacheEntry

T = TypeVar("T")


class CompanionLookup(Protocol[T]):
    """One request's announced follow-up lookup: the entry ``<customer id><suffix>`` scoped to
    the customer, in the cache that made it."""

    async def get(self, key: str, *, customer_id: str) -> CacheEntry[T] | None:
        """What the cache's ``get(key, customer_id=customer_id)`` answers, without asking the
        shared tier again when the session's read brought the answer along."""
        ...

    def take(self, key: str, *, customer_id: str) -> tuple[bool, CacheEntry[T] | None]:
        """(True, what :meth:`get` answers) when that needs no awaiting (this process's memory,
        or the session's read brought it along); else (False, None), and only :meth:`get` can
        tell. Either way the lookup is used up."""
        ...

    def discard(self) -> None:
        """Forget what the session's read brought along: the caller did something else before
        (a platform call), and the lookup must be a lookup of its own moment."""
        ...


@runtime_checkable
class CompanionCache(Protocol[T]):
    """A cache whose lookups can be announced (the layered cache)."""

    def companion(self, suffix: str) -> CompanionLookup[T] | None:
        """A follow-up lookup of ``<customer id><suffix>``; None when no lookup before it can
        bring its answer along (no shared tier, or one that cannot chain reads)."""
        ...


@runtime_checkable
class ChainingCache(Protocol[T]):
    """A cache whose lookups can bring an announced follow-up's answer along."""

    async def get_chained(
        self, key: str, *, customer_id: str, then: CompanionLookup[Any]
    ) -> CacheEntry[T] | None:
        """``get(key, customer_id=customer_id)``; when its answer names a customer, it may also
        fetch ``then``'s entry for that customer in the same round trip."""
        ...

    def get_chained_soon(
        self,
        key: str,
        *,
        customer_id: str,
        then: CompanionLookup[Any],
        done: Callable[[bool, CacheEntry[T] | None], None],
    ) -> bool:
        """:meth:`get_chained` handed to a callback, without a task: True when the read was
        started, and ``done(True, entry)`` then gets :meth:`get_chained`'s answer on the loop,
        or ``done(False, None)`` when only :meth:`get_chained` can tell; False, and nothing
        started, when it cannot be read that way."""
        ...
