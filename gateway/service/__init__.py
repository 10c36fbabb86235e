"""The access service: what every front-end calls to decide a request.

Layering: front-ends -> :class:`AccessService` -> identity, caches, single-flight -> the
platform adapter and the pure decision core.
"""

from gateway.service.access import AccessService
from gateway.service.build import build_access_service
from gateway.service.cache import CacheEntry, MemoryCache, PayloadCache
from gateway.service.outcome import AccessOutcome, AccessRequest, Credentials, Verdict

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
