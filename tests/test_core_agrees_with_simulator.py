"""The decision core and the simulator compute access independently; they must agree.

For every seeded customer and access right, at instants spread over a year (both DST switches,
window edges, midnight), the simulator's own ``accessGranted`` — fetched through the real
client over loopback — must equal what the core decides from that payload at the fetch
instant. A disagreement means one of the two misreads the platform's semantics.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway.config import PlatformSettings
from gateway.core.decision import evaluate_access, item_open_at
from gateway.core.policy import AccessRule, ValidityPolicy
from gateway.platform.client import PlenigoClient
from gateway.sandbox.app import SandboxOptions, create_app
from gateway.sandbox.data import load_data
from tests.conftest import REPO_ROOT

SEED_FILE = REPO_ROOT / "gateway" / "resources" / "sandbox-data.json"
BERLIN = ZoneInfo("Europe/Berlin")
LOADED_AT = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
POLICY = ValidityPolicy(
    time_zone=BERLIN,
    max_ttl=timedelta(minutes=5),
    default_ttl=timedelta(minutes=1),
    negative_ttl=timedelta(seconds=10),
)


def _instants() -> list[datetime]:
    local = [
        (2026, 3, 1, 12, 0),
        (2026, 3, 1, 5, 59),
        (2026, 3, 1, 6, 0),
        (2026, 3, 1, 17, 59),
        (2026, 3, 1, 18, 0),
        (2026, 3, 1, 21, 59),
        (2026, 3, 1, 22, 0),
        (2026, 3, 2, 0, 0),
        (2026, 3, 2, 3, 59),
        (2026, 3, 2, 4, 0),
        # spring forward: 2026-03-29 02:00 CET -> 03:00 CEST
        (2026, 3, 29, 1, 59),
        (2026, 3, 29, 3, 0),
        (2026, 3, 29, 3, 59),
        (2026, 3, 29, 4, 0),
        (2026, 3, 29, 6, 0),
        # fall back: 2026-10-25 03:00 CEST -> 02:00 CET
        (2026, 10, 25, 1, 59),
        (2026, 10, 25, 2, 30),
        (2026, 10, 25, 3, 59),
        (2026, 10, 25, 4, 0),
        (2026, 10, 25, 22, 0),
    ]
    return [datetime(*parts, tzinfo=BERLIN).astimezone(UTC) for parts in local] + [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, first pass through 02:30
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # 02:30 CET, second pass
    ]


def _seeded_pairs() -> list[tuple[str, str]]:
    document: dict[str, Any] = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    pairs = set()
    for customer in document["customers"]:
        for right in customer.get("accessRights", []):
            pairs.add((customer["customerId"], right["accessRightUniqueId"]))
    return sorted(pairs)


class Clock:
    def __init__(self) -> None:
        self.now = LOADED_AT

    def __call__(self) -> datetime:
        return self.now


async def test_core_and_simulator_agree_at_every_instant(aiohttp_server: Any) -> None:
    clock = Clock()
    data = load_data(SEED_FILE, LOADED_AT)
    server = await aiohttp_server(create_app(data, SandboxOptions(api_token="t"), clock=clock))
    settings = PlatformSettings(
        base_url=str(server.make_url("/api/v3.0")), api_token="t", max_retries=0
    )
    pairs = _seeded_pairs()
    assert len(pairs) >= 10, "the seed data should exercise every kind of item"
    compared = 0
    async with aiohttp.ClientSession() as session:
        client = PlenigoClient(session, settings, clock=clock)
        for instant in _instants():
            clock.now = instant
            for customer_id, right in pairs:
                payload = await client.check_access(customer_id, [right])
                decision = evaluate_access(payload, AccessRule((right,)), instant, POLICY)
                assert decision.granted == payload.granted, (
                    f"customer {customer_id}, right {right!r} at {instant.isoformat()}: "
                    f"simulator says {payload.granted}, core says {decision.granted} "
                    f"({decision.reason})"
                )
                # Two-sided: the core never overrides a platform "false", so the check above
                # alone would miss a simulator that denies too much. Compare every item's flag
                # with the core's own reading of its time conditions.
                for item in payload.items:
                    expected = (
                        not payload.customer_blocked
                        and not item.blocked
                        and item_open_at(item, instant, BERLIN)
                    )
                    assert item.granted == expected, (
                        f"customer {customer_id}, item {item.access_right_id!r} at "
                        f"{instant.isoformat()}: simulator {item.granted}, core {expected}"
                    )
                compared += 1
    assert compared == len(pairs) * len(_instants())


@pytest.mark.parametrize("right", ["daily-window", "night-owl"])
async def test_windows_really_open_and_close_in_the_seed(aiohttp_server: Any, right: str) -> None:
    """Guards the test above against comparing only constant answers."""
    clock = Clock()
    data = load_data(SEED_FILE, LOADED_AT)
    server = await aiohttp_server(create_app(data, SandboxOptions(api_token="t"), clock=clock))
    settings = PlatformSettings(base_url=str(server.make_url("/api/v3.0")), api_token="t")
    seen = set()
    async with aiohttp.ClientSession() as session:
        client = PlenigoClient(session, settings, clock=clock)
        for instant in _instants():
            clock.now = instant
            seen.add((await client.check_access("100002", [right])).granted)
    assert seen == {True, False}
