"""How many API requests the simulator answered, per operation: a simulator-only counter.

Tests and benchmarks read it to check how many platform calls the gateway made (a spike on
one customer must cost one ``validateCustomerSession`` and one ``checkAccessOfCustomer``, not
one per visitor). A request is counted once it has been answered, under the OpenAPI
``operationId`` of its route (``unknown`` for paths the API does not have), with its status,
whatever that status is: injected 500s and 429s, a wrong API token, validation errors alike.

The app serves the counts at ``/_sandbox/calls``, outside the API prefix (see
:mod:`gateway.sandbox.app`); the real platform has nothing like it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

UNKNOWN_OPERATION = "unknown"


class CallCounter:
    """Answered API requests by (operation, status). One per simulator app; not thread-safe
    (the app runs on one event loop)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, int]] = Counter()

    def record(self, operation: str, status: int) -> None:
        self._counts[(operation, status)] += 1

    def count(self, operation: str) -> int:
        """Requests answered for ``operation``, whatever their status."""
        return sum(n for (op, _), n in self._counts.items() if op == operation)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def snapshot(self) -> dict[str, Any]:
        """The JSON body of ``GET /_sandbox/calls``::

        {"total": 3,
         "calls": {"checkAccessOfCustomer": 1, "validateCustomerSession": 2},
         "statuses": {"checkAccessOfCustomer": {"200": 1},
                      "validateCustomerSession": {"200": 1, "401": 1}}}

        Operations never called are absent (read them as 0).
        """
        calls: dict[str, int] = {}
        statuses: dict[str, dict[str, int]] = {}
        for (operation, status), n in sorted(self._counts.items()):
            calls[operation] = calls.get(operation, 0) + n
            statuses.setdefault(operation, {})[str(status)] = n
        return {"total": self.total, "calls": calls, "statuses": statuses}

    def reset(self) -> dict[str, Any]:
        """The counts so far (as :meth:`snapshot`), then start again from zero; nothing
        answered in between is lost, because nothing runs between the two."""
        counts = self.snapshot()
        self._counts.clear()
        return counts
