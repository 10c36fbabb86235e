"""What the gateway needs from a platform, as two small interfaces.

:class:`~gateway.platform.client.PlenigoClient` (API v3) implements both. Other back ends can slot
in by implementing one or both, for example:

* the plenigo **partner API** (verify login / verify transfer token / check access);
* the plenigo **legacy v2 app access** check (``GET /access/app/{customerId}/{productId}/
  {customerAppId}`` → bought or not): an :class:`AccessProvider` whose ``access_right_ids`` are
  product ids, answering one item per id with no windows, pauses or ``maxCacheDate``;
* a **license vendor** (one-time login ``token`` → identity; product licenses with
  ``from``/``until``/``isActive``): the token check is ``exchange_transfer_token``, the license
  list becomes items with lifetime bounds.

Every method raises only :class:`~gateway.errors.PlatformError` subclasses; library exceptions are
translated inside the implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gateway.core.payload import AccessPayload


@runtime_checkable
class IdentityProvider(Protocol):
    """Turns what a visitor brings (a session or a one-time transfer token) into an identity."""

    async def customer_for_session(self, session_token: str) -> str:
        """The customer id behind a session token.

        Raises :class:`~gateway.errors.InvalidSession` when the platform does not know the session.
        The id goes into a header, cache keys and log lines as it is: it must pass
        :func:`gateway.core.tokens.visible_token` (raise
        :class:`~gateway.errors.BadPlatformResponse` for one that does not).
        """
        ...

    async def exchange_transfer_token(self, transfer_token: str) -> str:
        """Redeem a one-time transfer token for a customer session token.

        Raises :class:`~gateway.errors.InvalidTransferToken` when the token is unknown, already
        used or expired. The token is consumed by a successful call. The session token returned
        is set as a cookie as it is: it must pass :func:`gateway.core.tokens.cookie_value`
        (raise :class:`~gateway.errors.BadPlatformResponse` for one that does not).
        """
        ...


@runtime_checkable
class AccessProvider(Protocol):
    """Answers what a customer may access, for the decision core to evaluate."""

    async def check_access(
        self, customer_id: str, access_right_ids: Sequence[str]
    ) -> AccessPayload:
        """The platform's access state for these ids, stamped with when it was asked.

        Raises :class:`~gateway.errors.UnknownCustomer` when the platform has no such customer.
        """
        ...
