"""The simulator's in-memory world: customers, their access-right items and their sessions.

Plain mutable dataclasses: the simulator's handlers change them in place (create, update, block,
delete), the way the platform's database would change. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

# Constraints the OpenAPI subset puts on identifiers; the loader and the handlers enforce them so
# that every response the simulator sends validates against the documented schemas.
CUSTOMER_ID_PATTERN = re.compile(r"^[0-9]{1,18}$")
ACCESS_RIGHT_ID_PATTERN = re.compile(r"^[0-9\-a-zA-Z]{2,30}$")
ITEM_ID_MAX_LENGTH = 30
PRODUCT_ID_MAX_LENGTH = 100

ITEM_TYPES = frozenset(
    {
        "APP_STORE_PRODUCT",
        "APP_STORE_SUBSCRIPTION",
        "CORPORATE_ACCOUNT",
        "EXTERNAL",
        "MULTIUSER_SUBSCRIPTION",
        "SINGLE_PRODUCT",
        "SUBSCRIPTION",
        "SUBSCRIPTION_ITEM",
    }
)
# "Block an access right item of type EXTERNAL or SINGLE_PRODUCT for a customer." (API reference)
BLOCKABLE_ITEM_TYPES = frozenset({"EXTERNAL", "SINGLE_PRODUCT"})
USER_TYPES = frozenset({"API", "CUSTOMER", "MERCHANT", "IMPORTER", "SYSTEM"})


@dataclass(slots=True)
class AccessRightItem:
    """One access-right item of a customer, with the fields hasAccess reports.

    ``max_cache_for`` is a simulator extension: when set, every response reports
    ``maxCacheDate = now + max_cache_for`` (a rolling hint), overriding ``max_cache_date``.
    """

    access_right_unique_id: str
    item_id: str
    item_type: str = "SUBSCRIPTION"
    product_id: str | None = None
    blocked: bool = False
    life_time_start: datetime | None = None
    life_time_end: datetime | None = None
    access_time_start: time | None = None
    access_time_end: time | None = None
    paused_time_start: datetime | None = None
    paused_time_end: datetime | None = None
    max_cache_date: datetime | None = None
    max_cache_for: timedelta | None = None
    data: dict[str, str] = field(default_factory=dict)
    access_right_data: dict[str, str] = field(default_factory=dict)
    active_partners: list[str] | None = None
    created_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    changed_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    created_by: str = "PLENIGO"
    created_by_type: str = "SYSTEM"
    changed_by: str = "PLENIGO"
    changed_by_type: str = "SYSTEM"

    def effective_max_cache_date(self, now: datetime) -> datetime | None:
        if self.max_cache_for is not None:
            return now + self.max_cache_for
        return self.max_cache_date


@dataclass(slots=True)
class Customer:
    """A customer as far as access rights go: blocked or not, and a list of items.

    Several items may share one ``accessRightUniqueId`` (e.g. an old and a renewed subscription);
    hasAccess reports all of them.
    """

    customer_id: str
    blocked: bool = False
    items: list[AccessRightItem] = field(default_factory=list)
    created_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    changed_date: datetime = field(default_factory=lambda: datetime.now(UTC))

    def items_for(self, access_right_unique_id: str) -> list[AccessRightItem]:
        return [i for i in self.items if i.access_right_unique_id == access_right_unique_id]


@dataclass(frozen=True, slots=True)
class Session:
    """A customer session: the opaque token a visitor holds, and what validation reports."""

    token: str
    session_id: str
    customer_id: str
    created: datetime
    expires: datetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires


@dataclass(slots=True)
class SandboxData:
    """Everything the simulator knows. ``customers`` and ``sessions`` are keyed by id / token."""

    customers: dict[str, Customer] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    company_id: str = "SANDBOXCOMPANY0000001"
    contract_company_id: str = "SANDBOXCONTRACT000001"

    def next_item_id(self) -> str:
        """A fresh numeric item id, larger than any numeric one in use."""
        numeric = [
            int(i.item_id)
            for c in self.customers.values()
            for i in c.items
            if i.item_id.isdigit() and len(i.item_id) < 18
        ]
        return str(max(numeric, default=9000) + 1)


@dataclass(slots=True)
class Subscription:
    """A subscription bought through the simulator-only ``buy`` operation: it backs one
    access-right item (``item``), whose id is the subscription id. ``status`` is ``ACTIVE``,
    ``CANCELLED`` (ends at ``end``) or ``ENDED``."""

    subscription_id: int
    order_id: int
    customer_id: str
    item: AccessRightItem
    start: datetime
    status: str = "ACTIVE"
    end: datetime | None = None
    cancellation_date: datetime | None = None
    changed_date: datetime = field(default_factory=lambda: datetime.now(UTC))
