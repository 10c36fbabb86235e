"""The simulator's behaviour: accessGranted semantics, seed loading, options, CLI (callbacks:
test_callbacks_sent.py)."""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox import cli
from gateway.sandbox.access import in_daily_window, item_granted
from gateway.sandbox.app import SandboxOptions, create_app
from gateway.sandbox.data import (
    load_data,
    parse_daily_time,
    parse_duration,
    parse_instant,
)
from gateway.sandbox.model import AccessRightItem, SandboxData
from tests.conftest import REPO_ROOT
from tests.sandbox.conftest import API, FIXED_NOW, SEED_FILE, ClientFactory, FakeClock

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


async def has_access(client: TestClient, customer: str, ids: str) -> dict[str, Any]:
    resp = await client.get(
        f"{API}/accessRights/{customer}/hasAccess", params={"accessRightUniqueIds": ids}
    )
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


# --- accessGranted over HTTP, with the clock moved -------------------------------------------


@pytest.mark.parametrize(
    ("at", "customer", "right", "granted"),
    [
        pytest.param(
            berlin(2025, 6, 11, 5, 59, 59), "100002", "daily-window", False, id="before-window"
        ),
        pytest.param(berlin(2025, 6, 11, 6, 0), "100002", "daily-window", True, id="window-opens"),
        pytest.param(
            berlin(2025, 6, 11, 17, 59, 59), "100002", "daily-window", True, id="window-last-second"
        ),
        pytest.param(
            berlin(2025, 6, 11, 18, 0), "100002", "daily-window", False, id="window-closes"
        ),
        pytest.param(
            berlin(2025, 6, 11, 21, 59, 59), "100002", "night-owl", False, id="night-before"
        ),
        pytest.param(berlin(2025, 6, 11, 22, 0), "100002", "night-owl", True, id="night-opens"),
        pytest.param(berlin(2025, 6, 12, 0, 0), "100002", "night-owl", True, id="night-midnight"),
        pytest.param(
            berlin(2025, 6, 12, 3, 59, 59), "100002", "night-owl", True, id="night-last-second"
        ),
        pytest.param(berlin(2025, 6, 12, 4, 0), "100002", "night-owl", False, id="night-closes"),
        # DST: 2026-03-29 02:00 CET -> 03:00 CEST, 2025-10-26 03:00 CEST -> 02:00 CET;
        # the local wall-clock time decides
        pytest.param(
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
            "100002",
            "night-owl",
            True,
            id="dst-spring-0330-local",
        ),
        pytest.param(
            datetime(2026, 3, 29, 4, 0, tzinfo=UTC),
            "100002",
            "daily-window",
            True,
            id="dst-spring-0600-local",
        ),
        pytest.param(
            datetime(2025, 10, 26, 2, 59, tzinfo=UTC),
            "100002",
            "night-owl",
            True,
            id="dst-autumn-0359-local",
        ),
        pytest.param(
            datetime(2025, 10, 26, 3, 0, tzinfo=UTC),
            "100002",
            "night-owl",
            False,
            id="dst-autumn-0400-local",
        ),
        # pause [-1d, +7d): start inclusive, end exclusive
        pytest.param(
            FIXED_NOW - timedelta(days=1, microseconds=1),
            "100003",
            "premium",
            True,
            id="before-pause",
        ),
        pytest.param(FIXED_NOW - timedelta(days=1), "100003", "premium", False, id="pause-starts"),
        pytest.param(FIXED_NOW + timedelta(days=7), "100003", "premium", True, id="pause-ends"),
        # lifetime [.., -1d): end exclusive
        pytest.param(
            FIXED_NOW - timedelta(days=1, microseconds=1),
            "100006",
            "premium",
            True,
            id="lifetime-last-instant",
        ),
        pytest.param(FIXED_NOW - timedelta(days=1), "100006", "premium", False, id="lifetime-ends"),
        # lifetime [+1h, ..): start inclusive
        pytest.param(
            FIXED_NOW + timedelta(minutes=59), "100009", "premium", False, id="lifetime-not-started"
        ),
        pytest.param(
            FIXED_NOW + timedelta(hours=1), "100009", "premium", True, id="lifetime-starts"
        ),
        # blocked item / blocked customer whatever the time
        pytest.param(FIXED_NOW, "100004", "premium", False, id="blocked-item"),
        pytest.param(FIXED_NOW, "100005", "premium", False, id="blocked-customer"),
    ],
)
async def test_access_granted_follows_the_clock(
    client: TestClient, clock: FakeClock, at: datetime, customer: str, right: str, granted: bool
) -> None:
    clock.now = at
    body = await has_access(client, customer, right)
    assert body["accessGranted"] is granted
    assert [i["accessGranted"] for i in body["items"]] == [granted]


async def test_blocked_customer_reports_blocked_but_item_not_blocked(client: TestClient) -> None:
    body = await has_access(client, "100005", "premium")
    assert body["customerBlocked"] is True
    assert body["items"][0]["blocked"] is False


async def test_daily_window_uses_the_configured_time_zone(
    make_client: ClientFactory, clock: FakeClock
) -> None:
    clock.now = datetime(2025, 6, 11, 5, 0, tzinfo=UTC)  # 07:00 in Berlin, 05:00 in UTC
    berlin_client = await make_client()
    utc_client = await make_client(SandboxOptions(time_zone="UTC"))
    assert (await has_access(berlin_client, "100002", "daily-window"))["accessGranted"] is True
    assert (await has_access(utc_client, "100002", "daily-window"))["accessGranted"] is False


async def test_max_cache_date_is_reported(client: TestClient, clock: FakeClock) -> None:
    fixed = await has_access(client, "100007", "premium")
    assert fixed["items"][0]["maxCacheDate"] == "2025-06-11T10:02:00.000000Z"
    plain = await has_access(client, "100001", "premium")
    assert plain["items"][0]["maxCacheDate"] is None
    clock.advance(600)  # the rolling hint moves with the clock, the fixed one does not
    rolling = await has_access(client, "100011", "premium")
    assert rolling["items"][0]["maxCacheDate"] == "2025-06-11T10:12:00.000000Z"
    assert (await has_access(client, "100007", "premium"))["items"][0]["maxCacheDate"] == (
        "2025-06-11T10:02:00.000000Z"
    )


async def test_item_fields_are_reported(client: TestClient) -> None:
    body = await has_access(client, "100002", "night-owl")
    (item,) = body["items"]
    assert item["accessTimeStart"] == "22:00:00"
    assert item["accessTimeEnd"] == "04:00:00"
    assert item["lifeTimeStart"] == "2025-05-12T10:00:00.000000Z"
    assert item["pausedTimeStart"] is None
    assert item["itemType"] == "SUBSCRIPTION"
    assert item["productId"] == "P_SANDBOX_NIGHT"


async def test_session_expiry_follows_the_clock(client: TestClient, clock: FakeClock) -> None:
    resp = await client.get(f"{API}/sessions/validate?sessionToken=demo-session-expired")
    assert resp.status == 401
    assert (await resp.json())["errorCode"] == 20028
    clock.now = FIXED_NOW - timedelta(hours=2)
    resp = await client.get(f"{API}/sessions/validate?sessionToken=demo-session-expired")
    assert resp.status == 200


# --- the pure functions ----------------------------------------------------------------------

T = time


@pytest.mark.parametrize(
    ("start", "end", "at", "inside"),
    [
        pytest.param(None, None, T(3), True, id="no-window"),
        pytest.param(T(6), T(6), T(3), True, id="start-equals-end-whole-day"),
        pytest.param(T(6), None, T(5, 59), False, id="open-end-before"),
        pytest.param(T(6), None, T(23, 59), True, id="open-end-after"),
        pytest.param(None, T(18), T(0), True, id="open-start-before-end"),
        pytest.param(None, T(18), T(18), False, id="open-start-at-end"),
        pytest.param(T(22), T(4), T(12), False, id="crossing-midday"),
        pytest.param(T(22), T(4), T(22), True, id="crossing-start"),
        pytest.param(T(22), T(4), T(4), False, id="crossing-end"),
    ],
)
def test_in_daily_window(start: time | None, end: time | None, at: time, inside: bool) -> None:
    assert in_daily_window(start, end, at) is inside


@pytest.mark.parametrize(
    ("pause_start", "pause_end", "granted"),
    [
        pytest.param(None, None, True, id="no-pause"),
        pytest.param(FIXED_NOW, None, False, id="open-ended-pause"),
        pytest.param(None, FIXED_NOW, True, id="pause-ended"),
        pytest.param(None, FIXED_NOW + timedelta(seconds=1), False, id="pause-until-later"),
        pytest.param(FIXED_NOW + timedelta(seconds=1), None, True, id="pause-not-begun"),
    ],
)
def test_one_sided_pauses(
    pause_start: datetime | None, pause_end: datetime | None, granted: bool
) -> None:
    item = AccessRightItem("premium", "1", paused_time_start=pause_start, paused_time_end=pause_end)
    assert item_granted(item, customer_blocked=False, now=FIXED_NOW, zone=BERLIN) is granted


# --- time expressions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("now", FIXED_NOW, id="now"),
        pytest.param("+2m", FIXED_NOW + timedelta(minutes=2), id="plus-minutes"),
        pytest.param("-1d", FIXED_NOW - timedelta(days=1), id="minus-day"),
        pytest.param("+30d", FIXED_NOW + timedelta(days=30), id="plus-days"),
        pytest.param("+1d12h", FIXED_NOW + timedelta(hours=36), id="compound"),
        pytest.param("-45s", FIXED_NOW - timedelta(seconds=45), id="seconds"),
        pytest.param("+2w", FIXED_NOW + timedelta(weeks=2), id="weeks"),
        pytest.param("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC), id="rfc3339-z"),
        pytest.param(
            "2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC), id="rfc3339-offset"
        ),
        pytest.param(
            "2019-01-01T07:53:23.450961Z",
            datetime(2019, 1, 1, 7, 53, 23, 450961, tzinfo=UTC),
            id="rfc3339-fraction",
        ),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text, FIXED_NOW)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "text",
    ["tomorrow", "2m", "+2x", "+", "2025-01-01", "2025-01-01T00:00:00", "+1.5h", ""],
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"instant|offset"):
        parse_instant(text, FIXED_NOW)


def test_parse_duration_and_daily_time() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_daily_time("06:00") == time(6)
    assert parse_daily_time("23:59:59") == time(23, 59, 59)
    for bad in ("24:00", "6:00", "06:60", "noon"):
        with pytest.raises(ValueError, match="time of day"):
            parse_daily_time(bad)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("-2m")


# --- loading seed files ------------------------------------------------------------------------


def test_seed_file_loads_with_every_scenario(seed_data: SandboxData) -> None:
    assert set(seed_data.customers) == {str(100001 + n) for n in range(11)}
    assert "demo-session-plain" in seed_data.sessions
    assert seed_data.customers["100005"].blocked
    (short,) = seed_data.customers["100007"].items
    assert short.max_cache_date == FIXED_NOW + timedelta(minutes=2)
    ids = {i.access_right_unique_id for c in seed_data.customers.values() for i in c.items}
    assert ids == {"premium", "archive", "daily-window", "night-owl"}


def _customer(**fields: Any) -> dict[str, Any]:
    return {"customerId": "1", **fields}


def _item(**fields: Any) -> dict[str, Any]:
    return {"accessRightUniqueId": "premium", **fields}


BAD_DOCUMENTS = [
    pytest.param([], "expected an object", id="not-an-object"),
    pytest.param({"custmers": []}, "unknown key(s) 'custmers'", id="unknown-top-key"),
    pytest.param({"customers": {}}, "customers: expected a list", id="customers-not-list"),
    pytest.param({"customers": [{"customerId": "C1"}]}, "customers[0].customerId", id="bad-id"),
    pytest.param({"customers": [{}]}, "customers[0].customerId: required", id="missing-id"),
    pytest.param({"customers": [_customer(), _customer()]}, "appears twice", id="duplicate"),
    pytest.param(
        {"customers": [_customer(blocked="yes")]}, "expected true or false", id="blocked-not-bool"
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(lifeTimeEnd="tomorrow")])]},
        "customers[0].accessRights[0].lifeTimeEnd: 'tomorrow' is not an instant",
        id="bad-instant",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(accessTimeStart="6pm")])]},
        "accessRights[0].accessTimeStart",
        id="bad-window",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(itemType="BOOK")])]},
        "itemType: 'BOOK' is not one of",
        id="bad-item-type",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[{"accessRightUniqueId": "a b"}])]},
        "accessRightUniqueId: 'a b'",
        id="bad-right-id",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(lifeTimeStart="+1d", lifeTimeEnd="-1d")])]},
        "lifeTimeEnd is before lifeTimeStart",
        id="end-before-start",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(maxCacheFor="soon")])]},
        "maxCacheFor: 'soon' is not a duration",
        id="bad-duration",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(data={"k": 1})])]},
        "accessRights[0].data: at most 20 entries",
        id="bad-data-map",
    ),
    pytest.param(
        {"customers": [_customer(accessRights=[_item(lifetimeEnd="+1d")])]},
        "unknown key(s) 'lifetimeEnd'",
        id="typo-in-item",
    ),
    pytest.param(
        {
            "customers": [
                _customer(sessions=[{"token": "t"}]),
                {"customerId": "2", "sessions": [{"token": "t"}]},
            ]
        },
        "customers[1].sessions[0].token: used twice",
        id="duplicate-token",
    ),
    pytest.param(
        {"customers": [_customer(sessions=[{"token": "t", "expires": "later"}])]},
        "sessions[0].expires",
        id="bad-expiry",
    ),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_bad_data_names_the_problem(tmp_path: Path, document: Any, message: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"data\.json") as caught:
        load_data(path, FIXED_NOW)
    assert message in str(caught.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read sandbox data file"):
        load_data(tmp_path / "missing.json", FIXED_NOW)
    broken = tmp_path / "broken.json"
    broken.write_text('{"customers": [\n  {"customerId": }\n]}')
    with pytest.raises(ValueError, match=r"broken.json: invalid JSON at line 2"):
        load_data(broken, FIXED_NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        load_data(SEED_FILE, datetime(2025, 1, 1))


async def test_apps_do_not_share_or_change_the_loaded_data(
    make_client: ClientFactory, seed_data: SandboxData
) -> None:
    first, second = await make_client(), await make_client()
    resp = await first.delete(f"{API}/accessRights/100001/premium")
    assert resp.status == 202
    assert (await has_access(second, "100001", "premium"))["accessGranted"] is True
    assert seed_data.customers["100001"].items_for("premium")


# --- options -----------------------------------------------------------------------------------


async def test_latency_is_added(make_client: ClientFactory) -> None:
    client = await make_client(SandboxOptions(latency=0.15))
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get(f"{API}/sessions/validate?sessionToken=demo-session-plain")
    assert resp.status == 200
    assert loop.time() - started >= 0.15


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"error_rate": 1.5}, id="error-rate-above-1"),
        pytest.param({"error_rate": 0.6, "rate_limit_rate": 0.6}, id="rates-above-1"),
        pytest.param({"latency": -1}, id="negative-latency"),
        pytest.param({"transfer_token_ttl": 0}, id="zero-ttl"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        SandboxOptions(**kwargs)


def test_unknown_time_zone_is_refused(seed_data: SandboxData) -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        create_app(seed_data, SandboxOptions(time_zone="Mars/Olympus"))


# --- isolation from the decision core -------------------------------------------------------


def test_sandbox_imports_nothing_of_the_gateway_but_errors() -> None:
    package = REPO_ROOT / "gateway" / "sandbox"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name == "gateway" or name.startswith("gateway."):
                    assert name.startswith(("gateway.sandbox", "gateway.errors")), (
                        f"{source.name} imports {name}"
                    )


# --- the command ---------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(argv)


def test_parser_defaults() -> None:
    args = _parse()
    assert (args.host, args.port, args.data) == ("127.0.0.1", 8090, None)
    assert cli.DEFAULT_DATA == SEED_FILE


def test_run_refuses_bad_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"customers": [{"customerId": "x"}]}')
    assert cli.run(_parse("--data", str(bad))) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err
    assert "customers[0].customerId" in err
    assert cli.run(_parse("--time-zone", "Nowhere/Special")) == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_command_serves_until_sigterm() -> None:
    # The real command line: `paywall-gateway sandbox` through the package's entry point.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sandbox", "--port", "0", "--api-token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "demo-session-plain (customer 100001)" in line
        assert "demo-session-expired (customer 100001, expired)" in line
        base = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert base.startswith("http://127.0.0.1:")
        assert base.endswith("/api/v3.0")
        request = urllib.request.Request(
            f"{base}/sessions/validate?sessionToken=demo-session-plain",
            headers={"X-plenigo-token": "t"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp)["customerId"] == "100001"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
