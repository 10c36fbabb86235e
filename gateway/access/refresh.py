"""Refresh-ahead: a hot cache entry close to its end is fetched again in the background.

A request answered from a fresh entry within ``window`` of the entry's ``fresh_until`` is
answered from it at once and starts a background refresh of its key (:meth:`RefreshAhead.start`).
The refresh is the fetch a miss makes: it shares the miss's single-flight and cross-process
coalescing, and reads the generation before it asks the platform, so an invalidation meanwhile
is respected. A hot entry is thus replaced before it expires and its visitors never wait for the
platform; a cold one (no request in its last ``window``) expires as before.

* One refresh per key at a time, and at most one per key per ``window``: every entry's window
  ends within ``window`` of the start of its refresh, so an entry that came back with the same
  ``fresh_until`` (a fixed ``maxCacheDate``), or whose refresh failed, does not start another on
  every later request; it expires and the next request fetches it as a miss (stale-if-error
  included). This also caps entries shorter than ``window`` (negative answers) at one platform
  call per key per ``window``. The keys remembered are bounded (``remember``, oldest out).
* Failures never reach a request: they are counted (``paywall_refreshes_total``) and logged.
* The tasks are held here (the loop keeps only weak references to tasks) and :meth:`close`
  cancels them. A platform call the refresh shares with waiting requests is theirs too: it is
  not cancelled, only the refresh's wait for it.

The test on the request path is the caller's, one comparison: ``now >= fresh_until - window``.
For a fresh entry it can only hold when ``window`` > 0, so 0 disables refresh-ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import timedelta
from typing import Generic, TypeVar

from cachetools import TTLCache

from gateway.errors import PlatformUnavailable
from gateway.metrics import Metrics
from gateway.store.cache import Clock

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class RefreshAhead(Generic[K]):
    """Background refreshes of one cache's entries (``cache`` names it in metrics and logs)."""

    def __init__(
        self,
        cache: str,
        window: timedelta,
        clock: Clock,
        metrics: Metrics,
        *,
        remember: int = 10_000,
    ) -> None:
        self.cache = cache
        self.window = window
        self._metrics = metrics
        self._running: dict[K, asyncio.Task[None]] = {}
        # Keys refreshed within the last window: no second refresh for them until it passed.
        self._recent: TTLCache[K, bool] = TTLCache(
            maxsize=remember,
            ttl=window.total_seconds(),
            timer=lambda: clock().timestamp(),
        )
        self._closed = False

    def start(self, key: K, refresh: Callable[[], Awaitable[object]]) -> None:
        """Run ``refresh()`` in the background unless ``key`` was refreshed recently (or is
        being refreshed). Never raises and never waits."""
        if self._closed or key in self._recent or key in self._running:
            return
        self._recent[key] = True
        task = asyncio.get_running_loop().create_task(
            self._run(refresh), name=f"paywall-refresh-{self.cache}"
        )
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        self._metrics.refresh(self.cache, "started")

    async def _run(self, refresh: Callable[[], Awaitable[object]]) -> None:
        try:
            await refresh()
        except PlatformUnavailable as exc:  # the breaker's BreakerOpen included
            self._metrics.refresh(self.cache, "failed")
            log.debug("%s refresh failed: %s", self.cache, exc)
        except Exception:
            # A bug, not the platform: nobody waits for this task, so it must be logged here.
            self._metrics.refresh(self.cache, "failed")
            log.warning("%s refresh failed unexpectedly", self.cache, exc_info=True)
        else:
            self._metrics.refresh(self.cache, "succeeded")

    def _finished(self, key: K, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def close(self) -> None:
        """Cancel the refreshes in flight and wait until they are gone; start no more."""
        self._closed = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        """Refreshes in flight."""
        return len(self._running)
