"""The one exception tree of the gateway.

Adapters (platform client, caches, HTTP front-ends) translate library exceptions into these at
their edge, so nothing above them ever sees an aiohttp or redis exception. Each class carries the
HTTP status a front-end should answer with when the error reaches a visitor.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status_hint: int = 500


class BadRequest(GatewayError):
    """The visitor's request is malformed or ambiguous (bad path, header, cookie)."""

    status_hint = 400


class ConfigError(GatewayError):
    """The configuration cannot be used; the message names the key and the problem."""


class PlatformError(GatewayError):
    """Anything that went wrong talking to the platform API."""

    status_hint = 503


class InvalidSession(PlatformError):
    """The platform does not know the customer session (or it expired)."""

    status_hint = 401


class InvalidTransferToken(PlatformError):
    """The transfer token is unknown, already used or older than its 30 seconds."""

    status_hint = 401


class UnknownCustomer(PlatformError):
    """The platform has no such customer: for access purposes, no access at all."""

    status_hint = 403


class PlatformUnavailable(PlatformError):
    """Timeouts, connection errors, 5xx: no answer we could use."""


class RateLimited(PlatformUnavailable):
    """The platform answered 429; ``retry_after`` is its hint in seconds, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PlatformAuthError(PlatformUnavailable):
    """The platform rejected our API token: a configuration problem, never the visitor's."""


class BadPlatformResponse(PlatformUnavailable):
    """The platform answered with something that does not match its documented contract."""
