"""The access service: what every front-end calls to decide a request.

Layering: front-ends -> :class:`AccessService` -> identity, refresh-ahead, the cache tiers
(:mod:`gateway.store`, which know nothing of access) and the platform adapter -> the pure
decision core. No aiohttp and no Redis imports here: :mod:`~gateway.access.build` wires the
Redis tier in when one is configured.
"""

from gateway.access.build import build_access_service
from gateway.access.outcome import AccessOutcome, AccessRequest, Credentials, Verdict
from gateway.access.service import AccessService
from gateway.store.cache import CacheEntry, PayloadCache
from gateway.store.memory import MemoryCache

__all__ = [
    "AccessOutcome",
    "AccessRequest",
    "AccessService",
    "CacheEntry",
    "Credentials",
    "MemoryCache",
    "PayloadCache",
    "Verdict",
    "build_access_service",
]
