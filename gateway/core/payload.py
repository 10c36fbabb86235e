"""What the core knows about a customer's access: a hasAccess answer, fetched at one instant.

These are plain frozen dataclasses, independent of the platform's JSON shape; the platform
adapter converts its pydantic models into them. All datetimes are timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time


@dataclass(frozen=True, slots=True)
class AccessItem:
    """One access-right item as the platform reported it at the payload's ``fetched_at``.

    ``granted`` is the platform's own per-item ``accessGranted``; local evaluation may close an
    item that was granted, but never opens one the platform denied.
    Daily window times are wall-clock times in the configured time zone; ``None`` means open on
    that side. Lifetime and pause bounds are instants; ``None`` means open on that side.
    """

    access_right_id: str
    granted: bool
    blocked: bool = False
    lifetime_start: datetime | None = None
    lifetime_end: datetime | None = None
    window_start: time | None = None
    window_end: time | None = None
    pause_start: datetime | None = None
    pause_end: datetime | None = None
    max_cache_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccessPayload:
    """The platform's answer for one customer and one set of access-right ids.

    ``fetched_at`` is when the question was sent (t0): all validity arithmetic starts there.
    """

    customer_id: str
    customer_blocked: bool
    granted: bool
    items: tuple[AccessItem, ...]
    fetched_at: datetime

    @classmethod
    def no_access(cls, customer_id: str, fetched_at: datetime) -> AccessPayload:
        """The payload for a customer the platform does not know: nothing is granted."""
        return cls(
            customer_id, customer_blocked=False, granted=False, items=(), fetched_at=fetched_at
        )
