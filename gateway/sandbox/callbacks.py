"""Callbacks (webhooks) the simulator sends when data changes, like the platform does.

Body: ``{entityType, callbackType, entityId, entity}`` (the documented general structure). The
platform has no access-right entity type; a change to a customer's access rights is reported as
``CUSTOMER`` / ``CHANGE`` with the customer id, which is all a receiver may rely on anyway: a
callback is a trigger to re-fetch, never a source of truth. Sending is fire-and-forget; failures
are logged and otherwise ignored, as a webhook sender would.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from gateway.sandbox.model import Customer

log = logging.getLogger(__name__)


class CallbackSender:
    """Posts callbacks to one URL. Create it, then :meth:`start` and :meth:`close` it."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=self._timeout.total)
        for task in self._pending:
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every callback sent so far has been delivered (or has failed)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    def customer_changed(self, customer: Customer) -> None:
        body: dict[str, Any] = {
            "entityType": "CUSTOMER",
            "callbackType": "CHANGE",
            "entityId": customer.customer_id,
            "entity": {
                "customerId": customer.customer_id,
                "status": "BLOCKED" if customer.blocked else "ACTIVATED",
            },
        }
        task = asyncio.get_running_loop().create_task(self._send(body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, body: dict[str, Any]) -> None:
        if self._session is None:
            return
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status >= 300:
                    log.warning("callback to %s answered %s", self.url, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("callback to %s failed: %s", self.url, exc)
