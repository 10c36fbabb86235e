"""The compiled build: which modules mypyc turns into C extensions, and which of them are.

A cached decision is mostly the gateway's own Python (the policy, the access service, the L1
and L2 plumbing, metrics), so that is what a compiled build compiles: the same source, checked
by ``mypy --strict``, built by mypyc into C extension modules, about a quarter less CPU per
request (README, "Performance"). Nothing else changes: an extension module is imported in
place of its ``.py`` file when both are there.

``setup.py`` compiles :data:`MODULES` when ``GATEWAY_MYPYC=1`` is set for the build (``make
compiled`` builds a compiled copy of the tree; README, "The compiled build"); without it the
build is pure Python, as before. Left out: what mypyc (2.4) cannot compile (async generators,
such as the proxy's request body in ``gateway.web.bodies``; ``object.__new__`` on
``gateway.store.cache``'s entries, whose working parts are the compiled
``gateway.store.entries``; subclasses of aiohttp's classes; the access log's threads
and weak references, whose lines are made by the compiled ``gateway.access_lines``; a slots
dataclass with a type parameter in ``gateway.store.coalesce``; a runtime-checkable protocol in
``gateway.store.companion``); the redaction (subclassed in tests); and what is off the request
path. A compiled frozen dataclass that is copied or pickled says how in a ``__reduce__`` of its
own (``gateway.core.payload``). No compiled module awaits inside ``finally``: compiled, that
makes a later call re-raise an earlier call's exception (mypyc/mypyc#1114;
``tests/test_compiled.py``).
"""

from __future__ import annotations

import importlib.machinery
import sys

__all__ = ["BUILD_VARIABLE", "MODULES", "compiled_modules"]

BUILD_VARIABLE = "GATEWAY_MYPYC"
"""Set to ``1`` for a build (``setup.py``) to compile :data:`MODULES`."""

MODULES = (
    "gateway.access.breaker",
    "gateway.access.cached",
    "gateway.access.codecs",
    "gateway.access.identity",
    "gateway.access.outcome",
    "gateway.access.refresh",
    "gateway.access.service",
    "gateway.access_lines",
    "gateway.core.decision",
    "gateway.core.paths",
    "gateway.core.payload",
    "gateway.core.policy",
    "gateway.core.routes",
    "gateway.core.timeline",
    "gateway.core.tokens",
    "gateway.http.credentials",
    "gateway.http.forward",
    "gateway.http.forwarded",
    "gateway.http.callbacks",
    "gateway.http.names",
    "gateway.http.observe",
    "gateway.http.policy",
    "gateway.http.replies",
    "gateway.http.request",
    "gateway.http.steps",
    "gateway.metrics",
    "gateway.store.codec",
    "gateway.store.entries",
    "gateway.store.keys",
    "gateway.store.layered",
    "gateway.store.memory",
    "gateway.store.redis_batch",
    "gateway.store.redis_cache",
    "gateway.store.redis_chain",
    "gateway.store.redis_generations",
    "gateway.store.redis_guard",
    "gateway.store.singleflight",
    "gateway.web.handlers",
    "gateway.web.proxy",
    "gateway.web.responses",
)
"""The modules a compiled build compiles (``setup.py`` reads this tuple)."""


def compiled_modules() -> list[str]:
    """The modules of :data:`MODULES` that this process imported as C extensions (importing
    those it has not imported yet)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in MODULES:
        module = sys.modules.get(name) or importlib.import_module(name)
        if (getattr(module, "__file__", None) or "").endswith(suffixes):
            found.append(name)
    return found
