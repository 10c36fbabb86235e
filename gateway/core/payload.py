"""What the core knows about a customer's access: a hasAccess answer, fetched at one instant.

These are plain frozen dataclasses, independent of the platform's JSON shape; the platform
adapter converts its pydantic models into them. All datetimes are timezone-aware.

The compiled build compiles them (:mod:`gateway.compiled`): an L2 hit builds one payload from
the shared tier's bytes and decides from it. So their ``__init__`` is written out
(``init=False``; the generated one stays interpreted, see :mod:`gateway.access.outcome`), each
field set with ``object.__setattr__`` as a frozen dataclass's own does (mypyc compiles that
call to a plain store: about a tenth of the generated one's cost), and copy and pickle rebuild
them through ``__reduce__`` (their fields, in order), which a compiled frozen dataclass needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, time


@dataclass(frozen=True, slots=True, init=False)  # built per L2 hit (module docstring)
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

    def __init__(
        self,
        access_right_id: str,
        granted: bool,
        blocked: bool = False,
        lifetime_start: datetime | None = None,
        lifetime_end: datetime | None = None,
        window_start: time | None = None,
        window_end: time | None = None,
        pause_start: datetime | None = None,
        pause_end: datetime | None = None,
        max_cache_date: datetime | None = None,
    ) -> None:
        object.__setattr__(self, "access_right_id", access_right_id)
        object.__setattr__(self, "granted", granted)
        object.__setattr__(self, "blocked", blocked)
        object.__setattr__(self, "lifetime_start", lifetime_start)
        object.__setattr__(self, "lifetime_end", lifetime_end)
        object.__setattr__(self, "window_start", window_start)
        object.__setattr__(self, "window_end", window_end)
        object.__setattr__(self, "pause_start", pause_start)
        object.__setattr__(self, "pause_end", pause_end)
        object.__setattr__(self, "max_cache_date", max_cache_date)

    def __reduce__(self) -> tuple[object, ...]:
        return _reduced(self)


@dataclass(frozen=True, slots=True, init=False)  # built per L2 hit (module docstring)
class AccessPayload:
    """The platform's answer for one customer and one set of access-right ids.

    ``fetched_at`` is when the question was sent (t0): all validity arithmetic starts there.
    """

    customer_id: str
    customer_blocked: bool
    granted: bool
    items: tuple[AccessItem, ...]
    fetched_at: datetime

    def __init__(
        self,
        customer_id: str,
        customer_blocked: bool,
        granted: bool,
        items: tuple[AccessItem, ...],
        fetched_at: datetime,
    ) -> None:
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "customer_blocked", customer_blocked)
        object.__setattr__(self, "granted", granted)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "fetched_at", fetched_at)

    def __reduce__(self) -> tuple[object, ...]:
        return _reduced(self)

    @classmethod
    def no_access(cls, customer_id: str, fetched_at: datetime) -> AccessPayload:
        """The payload for a customer the platform does not know: nothing is granted."""
        return cls(
            customer_id, customer_blocked=False, granted=False, items=(), fetched_at=fetched_at
        )


def _reduced(value: AccessItem | AccessPayload) -> tuple[object, ...]:
    """``__reduce__`` of a payload class: the class, called again with the fields in order."""
    return (type(value), tuple(getattr(value, field.name) for field in fields(value)))
