"""Every Redis operation of a gateway process goes through one :class:`RedisGuard`.

The shared tier must never fail or slow a request: each operation is bounded by ``timeout``
seconds, and a Redis error or timeout is counted (``on_error(operation)``, the
``paywall_redis_errors_total{operation}`` metric) and reported to the caller as "did not
succeed", which the caller treats as a miss or a skipped write.

A Redis that is down or hanging would still cost every request up to ``timeout`` per operation,
so the guard is also a consecutive-failure circuit breaker: after ``failures`` failures in a row
it *opens* for ``open_seconds``, and every :meth:`RedisGuard.call` meanwhile answers "did not
succeed" at once, without touching Redis (L1 and the platform serve). Then it is *half-open*:
the next operation is a trial (the others are still skipped while it runs); if it succeeds the
breaker closes, if it fails it opens again for ``open_seconds``.

Skipped calls are not Redis errors and are not counted in ``paywall_redis_errors_total`` (that
metric counts operations that really failed, so its rate stays a measure of Redis trouble, not
of traffic); they are counted in :attr:`RedisGuard.skipped`, the breaker's state shows on
``/readyz`` (:attr:`RedisGuard.state`), and opening and closing are logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Literal, TypeVar

from redis.exceptions import RedisError

R = TypeVar("R")
log = logging.getLogger(__name__)

FAILURES = (RedisError, OSError, TimeoutError)

RedisState = Literal["ok", "degraded", "open"]


class RedisGuard:
    """Timeout, failure accounting and a circuit breaker for one process's Redis operations.

    ``failures``: consecutive failures that open the breaker (0: never opens);
    ``open_seconds``: how long it stays open before a trial; ``clock``: monotonic seconds.
    """

    DEGRADED_FOR: ClassVar[float] = 10.0  # seconds after a failure that Redis is "degraded"

    def __init__(
        self,
        *,
        timeout: float,
        on_error: Callable[[str], None],
        on_skip: Callable[[str], None] | None = None,
        failures: int = 5,
        open_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 0 or open_seconds <= 0:
            raise ValueError("failures must be >= 0 and open_seconds > 0")
        self.timeout = timeout
        self._on_error = on_error
        self._on_skip = on_skip
        self._failures = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._consecutive = 0
        self._open_until: float | None = None  # None: closed
        self._trial = False  # a half-open trial operation is running
        self._last_failure: float | None = None
        self.skipped = 0  # calls answered "did not succeed" without asking Redis

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped right now (open, or half-open with a trial running)."""
        if self._open_until is None:
            return False
        return self._trial or self._clock() < self._open_until

    @property
    def state(self) -> RedisState:
        """For ``/readyz``: "open" while calls are skipped; "degraded" after a recent failure
        or while a half-open breaker waits for its trial; "ok" otherwise."""
        if self.is_open:
            return "open"
        if self._open_until is not None:
            return "degraded"
        last = self._last_failure
        if last is not None and self._clock() - last < self.DEGRADED_FOR:
            return "degraded"
        return "ok"

    async def call(self, operation: str, call: Awaitable[R]) -> tuple[bool, R | None]:
        """(succeeded, result) of one Redis call, bounded and with failures absorbed.

        ``call`` is not awaited (it is closed) when the breaker is open."""
        trial = False
        if self._open_until is not None:
            if self.is_open:
                self.skipped += 1
                if self._on_skip is not None:
                    self._on_skip(operation)
                _discard(call)
                return False, None
            trial = self._trial = True
        try:
            async with asyncio.timeout(self.timeout):
                result = await call
        except FAILURES as exc:
            self._failed(operation, exc, trial=trial)
            return False, None
        finally:
            if trial:
                self._trial = False
        self._succeeded(trial=trial)
        return True, result

    def succeeded(self) -> None:
        """Account for a call that succeeded without :meth:`call` (a batched read that was
        handed to a callback): consecutive failures start again from zero."""
        self._succeeded(trial=False)

    def failed(self, operation: str, exc: BaseException) -> None:
        """Account for a failure the caller caught itself (e.g. one it must propagate)."""
        self._failed(operation, exc, trial=False)

    def _failed(self, operation: str, exc: BaseException, *, trial: bool) -> None:
        self._on_error(operation)
        log.debug("redis %s failed: %r", operation, exc)
        now = self._clock()
        self._last_failure = now
        self._consecutive += 1
        if not self._failures:
            return
        if trial:
            self._open_until = now + self._open_seconds
            log.warning(
                "redis still failing (%s: %r); not asking it again for %.1f s",
                operation,
                exc,
                self._open_seconds,
            )
        elif self._open_until is None and self._consecutive >= self._failures:
            # Failures of calls that started before the breaker opened do not extend it.
            self._open_until = now + self._open_seconds
            log.warning(
                "redis failed %d times in a row (last %s: %r); not asking it for %.1f s",
                self._consecutive,
                operation,
                exc,
                self._open_seconds,
            )

    def _succeeded(self, *, trial: bool) -> None:
        if trial:
            self._open_until = None
            log.info("redis answers again; using the shared tier")
        if self._open_until is None:
            # A call that started before the breaker opened does not close it: only a trial.
            self._consecutive = 0


def _discard(call: Awaitable[Any]) -> None:
    """Make sure a skipped call never runs (and never warns that it was not awaited)."""
    if isinstance(call, Coroutine):
        call.close()
    elif isinstance(call, asyncio.Future):
        call.cancel()
