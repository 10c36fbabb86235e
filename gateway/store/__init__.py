"""The cache tiers the access service keeps its answers in: the in-process L1
(:mod:`~gateway.store.cache`), the shared Redis tier with its plumbing (connecting, the guard
and breaker, generation records, batched and chained reads, the invalidation bus, cross-process
coalescing) and the layered cache over both. Nothing here knows what an access decision is:
values are opaque, their codecs are the caller's (:mod:`gateway.access.codecs`).
"""
