"""What an entry (:class:`~gateway.store.cache.CacheEntry`) computes when it is read:
``stale_until`` and ``owner``, from its shape (:mod:`gateway.store.cache`'s docstring,
"Memory").

The entries' own module is not compiled (``gateway/compiled.py`` says why), so their
properties are interpreted calls, even from compiled code. The request path reads them from
compiled modules (the L1 tier, the Redis tier and its codec) on every L2 hit: those call these
functions, which the compiled build compiles, and the properties call them too, so the rule is
written once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from gateway.store.cache import CacheEntry

__all__ = ["OWNED_BY_VALUE", "SESSIONS_PREFIX", "OwnedByValue", "owner_of", "stale_until_of"]

SESSIONS_PREFIX = "sessions-of:"
"""The owner scopes of session validations: ``sessions-of:<customer id>``."""


class OwnedByValue:
    """The owner code of an entry whose owner is the sessions scope of its own value."""

    __slots__ = ()


OWNED_BY_VALUE = OwnedByValue()
"""The owner code of every session validation (its value's sessions scope)."""


def stale_until_of(entry: CacheEntry[Any]) -> datetime:
    """:attr:`CacheEntry.stale_until <gateway.store.cache.CacheEntry.stale_until>`."""
    stale = entry._shape[0]
    return entry.fresh_until + stale if isinstance(stale, timedelta) else stale


def owner_of(entry: CacheEntry[Any]) -> str | None:
    """:attr:`CacheEntry.owner <gateway.store.cache.CacheEntry.owner>`."""
    code = entry._shape[1]
    if isinstance(code, OwnedByValue):
        return SESSIONS_PREFIX + cast(str, entry.value)
    return code
