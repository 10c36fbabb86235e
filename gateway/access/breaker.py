"""A circuit breaker for the platform: stop hammering an API that is down.

After ``failures`` consecutive :class:`~gateway.errors.PlatformUnavailable` errors (timeouts,
5xx, 429, a rejected API token, broken answers) the breaker *opens*: for ``open_for`` every call
fails at once with :class:`BreakerOpen`, a ``PlatformUnavailable``, so the service answers from
stale entries or by ``on_api_error`` without waiting for timeouts. Then it is *half-open*: one
trial call goes through (the others keep failing fast); its success closes the breaker, its
failure opens it again. Answers such as "invalid session" or "unknown customer" are successes:
the platform is working.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from gateway.access.service import Platform
from gateway.core.payload import AccessPayload
from gateway.errors import PlatformUnavailable
from gateway.store.cache import Clock

T = TypeVar("T")
log = logging.getLogger(__name__)


class BreakerOpen(PlatformUnavailable):
    """The call was not made: the platform failed too often recently."""


class CircuitBreaker:
    """Consecutive-failure breaker; ``failures = 0`` disables it."""

    def __init__(self, name: str, failures: int, open_for: timedelta, clock: Clock) -> None:
        self.name = name
        self._threshold = failures
        self._open_for = open_for
        self._clock = clock
        self._consecutive = 0
        self._open_until: datetime | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (for health checks and tests)."""
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        if self._threshold <= 0:
            return await work()
        trial = False
        if self._open_until is not None:
            if self._clock() < self._open_until or self._trial_running:
                raise BreakerOpen(f"{self.name}: circuit open")
            trial = self._trial_running = True
        try:
            result = await work()
        except PlatformUnavailable:
            self._failed()
            raise
        # Any other exception (a definite answer such as InvalidSession) or a cancellation says
        # nothing against the platform: no count; a cancelled trial lets the next one in.
        else:
            self._succeeded()
            return result
        finally:
            if trial:
                self._trial_running = False

    def _failed(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self._threshold:
            if self._open_until is None or self._clock() >= self._open_until:
                log.warning(
                    "%s: circuit opened after %d consecutive failures, for %.0f s",
                    self.name,
                    self._consecutive,
                    self._open_for.total_seconds(),
                )
            self._open_until = self._clock() + self._open_for

    def _succeeded(self) -> None:
        if self._open_until is not None:
            log.info("%s: circuit closed", self.name)
        self._consecutive = 0
        self._open_until = None


class GuardedPlatform:
    """A platform whose three calls pass through one breaker (one dependency, one host)."""

    def __init__(self, platform: Platform, breaker: CircuitBreaker) -> None:
        self._platform = platform
        self.breaker = breaker

    async def customer_for_session(self, session_token: str) -> str:
        return await self.breaker.call(lambda: self._platform.customer_for_session(session_token))

    async def exchange_transfer_token(self, transfer_token: str) -> str:
        return await self.breaker.call(
            lambda: self._platform.exchange_transfer_token(transfer_token)
        )

    async def check_access(
        self, customer_id: str, access_right_ids: Sequence[str]
    ) -> AccessPayload:
        return await self.breaker.call(
            lambda: self._platform.check_access(customer_id, access_right_ids)
        )
