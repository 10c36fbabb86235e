"""The platform's payload as the core keeps it: frozen values that copy, pickle and
``dataclasses.replace`` rebuild field for field, in the pure build and in the compiled one
(there through their own ``__reduce__``; gateway.core.payload)."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

import pytest

from gateway.core.payload import AccessItem, AccessPayload

T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC)


def _every_field_set() -> AccessPayload:
    item = AccessItem(
        "AR-1",
        True,
        True,
        T0 - timedelta(days=30),
        T0 + timedelta(days=30),
        time(6, 0),
        time(22, 30, 15),
        T0 + timedelta(days=2),
        T0 + timedelta(days=3),
        T0 + timedelta(hours=1),
    )
    return AccessPayload("100001", True, False, (item, AccessItem("AR-2", False)), T0)


ROUND_TRIPS: dict[str, Callable[[AccessPayload], AccessPayload]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda payload: pickle.loads(pickle.dumps(payload)),
    "replace": lambda payload: dataclasses.replace(payload),
}


@pytest.mark.parametrize("trip", ROUND_TRIPS.values(), ids=list(ROUND_TRIPS))
def test_a_payload_comes_back_field_for_field(
    trip: Callable[[AccessPayload], AccessPayload],
) -> None:
    payload = _every_field_set()
    back = trip(payload)
    assert back == payload
    assert hash(back) == hash(payload)
    assert dataclasses.astuple(back) == dataclasses.astuple(payload)
    assert [type(item) for item in back.items] == [AccessItem, AccessItem]


def test_the_written_out_init_keeps_the_defaults_and_the_order() -> None:
    item = AccessItem("AR-1", True)
    assert dataclasses.astuple(item) == ("AR-1", True, False) + (None,) * 7
    assert AccessItem(access_right_id="AR-1", granted=True, max_cache_date=T0).max_cache_date == T0
    payload = AccessPayload("1", False, True, (item,), T0)
    assert [field.name for field in dataclasses.fields(payload)] == [
        "customer_id",
        "customer_blocked",
        "granted",
        "items",
        "fetched_at",
    ]
    assert AccessPayload.no_access("2", T0) == AccessPayload("2", False, False, (), T0)


def test_payloads_stay_frozen() -> None:
    payload = _every_field_set()
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.granted = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.items[0].granted = False  # type: ignore[misc]
    changed = dataclasses.replace(payload.items[0], granted=False)
    assert (changed.granted, payload.items[0].granted) == (False, True)
