"""A local simulator of the plenigo v3 API subset the gateway uses.

It answers the same paths with the same payloads, status codes and error bodies as the
platform (see ``tests/contract/openapi-v3-gateway-subset.json``), from seeded customers
(:mod:`gateway.sandbox.data`), with optional latency, failure and rate-limit injection. The
demo, the tests and the benchmarks talk to it; the gateway cannot tell it from the real API
except by its base URL.

It computes ``accessGranted`` with its own small implementation
(:mod:`gateway.sandbox.access`) and imports nothing from :mod:`gateway.core` or
:mod:`gateway.platform`, so the two implementations check each other.

Layout: ``model`` (the in-memory world) ← ``data`` (seed file loading) ← ``access``
(accessGranted) ← ``wire`` (JSON shapes) ← ``routes_*`` (handlers) ← ``app`` (wiring) ← ``cli``.
``calls`` counts the requests answered per operation, for tests and benchmarks
(``GET /_sandbox/calls``, outside the API prefix); ``routes_sandbox`` holds the simulator-only
operations (buy, cancel, block, unblock, delete a customer) that send the platform's callbacks
through ``callbacks``.
"""
