"""The inputs of a decision besides the payload: which rights a request needs, and the knobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Literal


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Which access-right ids a request needs: ``any`` of them (default) or ``all`` of them."""

    access_right_ids: tuple[str, ...]
    require: Literal["any", "all"] = "any"

    def __post_init__(self) -> None:
        if not self.access_right_ids:
            raise ValueError("an access rule needs at least one access-right id")

    def __hash__(self) -> int:
        # What the dataclass would generate, written out so that the compiled build compiles
        # it: the access service looks its rule key up by the rule on every request.
        return hash((self.access_right_ids, self.require))


@dataclass(frozen=True, slots=True)
class ValidityPolicy:
    """How long a fetched payload may be used, and in which zone daily windows are read.

    ``max_ttl`` caps every payload; ``default_ttl`` stands in for an item's missing
    ``maxCacheDate``; ``negative_ttl`` bounds denials and unknown customers.
    """

    time_zone: tzinfo
    max_ttl: timedelta
    default_ttl: timedelta
    negative_ttl: timedelta
