"""Callbacks (webhooks) the simulator sends when something changes, like the platform does.

Body: ``{entityType, callbackType, entityId, entity}`` (seed 003's general structure), sent as
``POST`` with ``Content-Type: application/json`` to one configured URL
(``SandboxOptions.callback_url``; none = nothing is sent). What sends what:

* the simulator-only ``buy``: ``SUBSCRIPTION`` / ``CREATION`` and ``ORDER`` / ``CREATION``;
* ``cancel``: ``SUBSCRIPTION`` / ``CANCELLATION``, plus ``ENDED`` when the right ends at once;
* blocking or unblocking a customer: ``CUSTOMER`` / ``CHANGE``; deleting one: ``CUSTOMER`` /
  ``DELETION`` with ``"entity": null``;
* the API's direct access-right edits (create, update, delete, block, unblock an item): nothing,
  as the seeds document no callback for them.

Delivery runs in the background (the simulator's own answer never waits for it): a 2xx answer
is delivered; anything else, or no connection, is tried again after a backoff doubling from
``backoff`` up to :data:`MAX_BACKOFF`, at most ``tries`` times, then recorded as failed. Every
delivery is recorded (the last :data:`MAX_RECORDS`) for ``GET /_sandbox/callbacks``; the URL is
never recorded or logged (it may hold the receiver's secret).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from gateway.sandbox.model import Customer, Subscription

__all__ = ["CallbackSender", "Delivery"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0
MAX_RECORDS = 1000
MAX_PENDING = 1000
CLOSE_GRACE = 1.0


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Delivery:
    """One callback and how its delivery went: ``pending``, ``sent``, ``failed`` or
    ``cancelled`` (the simulator stopped first)."""

    delivery_id: int
    body: dict[str, Any]
    status: str = "pending"
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.delivery_id,
            "entityType": self.body["entityType"],
            "callbackType": self.body["callbackType"],
            "entityId": self.body["entityId"],
            "status": self.status,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "body": self.body,
        }


class CallbackSender:
    """Posts callbacks to ``url`` (None: sends nothing). :meth:`close` it at shutdown."""

    def __init__(
        self,
        url: str | None,
        *,
        tries: int = 5,
        backoff: float = 0.1,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.tries = max(1, tries)
        self.backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.deliveries: deque[Delivery] = deque(maxlen=MAX_RECORDS)

    # --- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Give pending deliveries a moment, cancel the rest, close the HTTP session."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=CLOSE_GRACE)
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every callback sent so far has been delivered (or has failed)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /_sandbox/callbacks``: counts by status, then each delivery."""
        counts = {"pending": 0, "sent": 0, "failed": 0, "cancelled": 0}
        for delivery in self.deliveries:
            counts[delivery.status] += 1
        return {**counts, "deliveries": [d.to_json() for d in self.deliveries]}

    # --- what the platform sends --------------------------------------------------------------

    def customer_changed(self, customer: Customer) -> None:
        self.send(
            "CUSTOMER",
            "CHANGE",
            customer.customer_id,
            {
                "customerId": customer.customer_id,
                "status": "BLOCKED" if customer.blocked else "ACTIVATED",
                "changedBy": "API",
                "changedByType": "API",
                "changedDate": _instant(customer.changed_date),
                "createdDate": _instant(customer.created_date),
            },
        )

    def customer_deleted(self, customer_id: str) -> None:
        self.send("CUSTOMER", "DELETION", customer_id, None)

    def subscription(self, callback_type: str, subscription: Subscription) -> None:
        self.send(
            "SUBSCRIPTION",
            callback_type,
            str(subscription.subscription_id),
            _subscription_entity(subscription),
        )

    def order_created(self, subscription: Subscription) -> None:
        item = subscription.item
        entity = {
            "orderId": subscription.order_id,
            "orderDate": _instant(subscription.start),
            "invoiceCustomerId": int(subscription.customer_id),  # a number in v3's example
            "status": "DONE",
            "currency": "EUR",
            "createdBy": subscription.customer_id,
            "createdByType": "CUSTOMER",
            "items": [
                {
                    "position": 1,
                    "deliveryCustomerId": subscription.customer_id,
                    "productId": item.product_id or item.access_right_unique_id,
                    "accessRightUniqueId": item.access_right_unique_id,
                    "subscriptionId": subscription.subscription_id,
                    "quantity": 1,
                }
            ],
        }
        self.send("ORDER", "CREATION", str(subscription.order_id), entity)

    # --- delivery -----------------------------------------------------------------------------

    def send(
        self, entity_type: str, callback_type: str, entity_id: str, entity: dict[str, Any] | None
    ) -> None:
        """Deliver one callback in the background; nothing when no URL is configured."""
        if self.url is None:
            return
        body = {
            "entityType": entity_type,
            "callbackType": callback_type,
            "entityId": entity_id,
            "entity": entity,
        }
        delivery = Delivery(next(self._ids), body)
        self.deliveries.append(delivery)
        if len(self._pending) >= MAX_PENDING:
            delivery.status, delivery.last_error = "failed", "too many pending deliveries"
            log.warning("callback %s %s dropped: too many pending", entity_type, callback_type)
            return
        task = asyncio.get_running_loop().create_task(self._deliver(self.url, delivery))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, delivery: Delivery) -> None:
        body = delivery.body
        try:
            for attempt in range(1, self.tries + 1):
                delivery.attempts = attempt
                if await self._try(url, delivery):
                    delivery.status = "sent"
                    return
                if attempt < self.tries:
                    await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            delivery.status = "failed"
            log.warning(
                "callback %s %s %s failed after %d tries",
                body["entityType"],
                body["callbackType"],
                body["entityId"],
                delivery.attempts,
            )
        except asyncio.CancelledError:
            delivery.status = "cancelled"
            raise

    async def _try(self, url: str, delivery: Delivery) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, json=delivery.body) as response:
                await response.read()
                delivery.last_status, delivery.last_error = response.status, None
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.last_status, delivery.last_error = None, type(exc).__name__
            return False


def _subscription_entity(subscription: Subscription) -> dict[str, Any]:
    """A subscription as seed 003's "Change subscription" shows it (a subset)."""
    item = subscription.item
    customer = subscription.customer_id
    return {
        "subscriptionId": subscription.subscription_id,
        "chainId": subscription.subscription_id,
        "invoiceCustomerId": customer,
        "deliveryCustomerId": customer,
        "status": subscription.status,
        "startDate": _instant(subscription.start),
        "endDate": _instant(subscription.end),
        "cancellationDate": _instant(subscription.cancellation_date),
        "accessBlocked": False,
        "currency": "EUR",
        "subscriptionType": "TIME_BASED",
        "createdBy": customer,
        "createdByType": "CUSTOMER",
        "changedBy": "API",
        "changedByType": "API",
        "changedDate": _instant(subscription.changed_date),
        "items": [
            {
                "subscriptionItemId": subscription.subscription_id,
                "accessRightUniqueId": item.access_right_unique_id,
                "productId": item.product_id or item.access_right_unique_id,
                "deliveryCustomerId": customer,
            }
        ],
    }
