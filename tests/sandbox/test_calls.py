"""The simulator's call counter: ``/_sandbox/calls`` counts answered API requests per operation."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox import cli
from gateway.sandbox.app import CALLS_PATH, OPERATION_IDS, ROUTES, SandboxOptions
from gateway.sandbox.calls import CallCounter
from tests.conftest import REPO_ROOT
from tests.sandbox.conftest import API, ClientFactory

TOKEN = "calls-test-token"
AUTH = {"X-plenigo-token": TOKEN}
EMPTY = {"total": 0, "calls": {}, "statuses": {}}


async def calls(client: TestClient, **headers: str) -> dict[str, Any]:
    resp = await client.get(CALLS_PATH, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


def test_every_route_is_counted_under_its_openapi_operation_id(
    openapi_spec: dict[str, Any],
) -> None:
    spec_ids = {
        (method.upper(), path): op["operationId"]
        for path, item in openapi_spec["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }
    served = {(method, path) for method, path, _ in ROUTES}
    assert set(OPERATION_IDS) == served
    assert {route: spec_ids[route] for route in served} == OPERATION_IDS


async def test_counts_every_answered_request_by_operation_and_status(
    client: TestClient,
) -> None:
    assert await calls(client) == EMPTY
    for token in ("demo-session-plain", "demo-session-plain", "no-such-session"):
        await client.get(f"{API}/sessions/validate", params={"sessionToken": token})
    await client.get(f"{API}/sessions/validate")  # 400: the parameter is missing
    await client.get(f"{API}/accessRights/100001/hasAccess?accessRightUniqueIds=premium")
    await client.get(f"{API}/accessRights/999999/hasAccess?accessRightUniqueIds=premium")
    await client.get(f"{API}/sessions/transferToken?transferToken=unknown")
    await client.get(f"{API}/no/such/operation")
    await client.get("/elsewhere")
    assert await calls(client) == {
        "total": 9,
        "calls": {
            "checkAccessOfCustomer": 2,
            "unknown": 2,
            "validateCustomerSession": 4,
            "validateTransferToken": 1,
        },
        "statuses": {
            "checkAccessOfCustomer": {"200": 1, "404": 1},
            "unknown": {"404": 2},
            "validateCustomerSession": {"200": 2, "400": 1, "401": 1},
            "validateTransferToken": {"412": 1},
        },
    }
    # Reading the counts is not an API request: it is not counted.
    assert (await calls(client))["total"] == 9


async def test_delete_returns_the_counts_and_starts_again(client: TestClient) -> None:
    await client.get(f"{API}/sessions/validate?sessionToken=demo-session-plain")
    resp = await client.delete(CALLS_PATH)
    assert resp.status == 200
    assert await resp.json() == {
        "total": 1,
        "calls": {"validateCustomerSession": 1},
        "statuses": {"validateCustomerSession": {"200": 1}},
    }
    assert await calls(client) == EMPTY
    await client.get(f"{API}/accessRights/100001/hasAccess?accessRightUniqueIds=premium")
    assert (await calls(client))["calls"] == {"checkAccessOfCustomer": 1}


async def test_needs_the_api_token_and_counts_refused_api_requests(
    make_client: ClientFactory,
) -> None:
    client = await make_client(SandboxOptions(api_token=TOKEN))
    await client.get(f"{API}/sessions/validate?sessionToken=demo-session-plain")  # no token
    await client.get(
        f"{API}/sessions/validate?sessionToken=demo-session-plain",
        headers={"X-plenigo-token": "wrong"},
    )
    for method in ("GET", "DELETE"):
        for headers in ({}, {"X-plenigo-token": "wrong"}):
            resp = await client.request(method, CALLS_PATH, headers=headers)
            assert resp.status == 401, (method, headers)
            assert (await resp.json())["errorCode"] == 99015
    assert await calls(client, **AUTH) == {
        "total": 2,
        "calls": {"validateCustomerSession": 2},
        "statuses": {"validateCustomerSession": {"401": 2}},
    }


async def test_injected_failures_are_counted(make_client: ClientFactory) -> None:
    client = await make_client(
        SandboxOptions(error_rate=0.5, rate_limit_rate=0.5), rng=random.Random(7)
    )
    for _ in range(20):
        await client.get(f"{API}/sessions/validate?sessionToken=demo-session-plain")
    statuses = (await calls(client))["statuses"]["validateCustomerSession"]
    assert set(statuses) == {"500", "429"}
    assert sum(statuses.values()) == 20


async def test_a_request_counts_once_answered(make_client: ClientFactory) -> None:
    # The latency must outlast the pause and the counter's own request on a loaded machine.
    client = await make_client(SandboxOptions(latency=1.0))
    url = f"{API}/sessions/validate?sessionToken=demo-session-plain"
    pending = [asyncio.create_task(client.get(url)) for _ in range(25)]
    await asyncio.sleep(0.1)
    # The counter itself answers at once, without the latency.
    assert await calls(client) == EMPTY
    responses = await asyncio.gather(*pending)
    assert {r.status for r in responses} == {200}
    assert (await calls(client))["calls"] == {"validateCustomerSession": 25}


async def test_other_methods_are_refused(client: TestClient) -> None:
    resp = await client.post(CALLS_PATH)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD, DELETE"
    assert (await resp.json())["errorCode"] == 99405
    assert await calls(client) == EMPTY


def test_counter_snapshot_and_reset() -> None:
    counter = CallCounter()
    counter.record("b", 200)
    counter.record("a", 500)
    counter.record("b", 200)
    counter.record("b", 429)
    assert (counter.count("b"), counter.count("a"), counter.count("c"), counter.total) == (
        3,
        1,
        0,
        4,
    )
    expected = {
        "total": 4,
        "calls": {"a": 1, "b": 3},
        "statuses": {"a": {"500": 1}, "b": {"200": 2, "429": 1}},
    }
    assert counter.snapshot() == expected
    assert counter.reset() == expected
    assert counter.snapshot() == EMPTY


def test_documented_in_the_command_help() -> None:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    text = parser.format_help()
    assert "GET /_sandbox/calls" in text
    assert "DELETE /_sandbox/calls" in text


def test_the_command_prints_and_serves_the_counts() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sandbox", "--port", "0", "--api-token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
        second = proc.stdout.readline()
        assert second.startswith("sandbox: call counts on http://127.0.0.1:")
        calls_url = second.split(" on ", 1)[1].split(" ", 1)[0]
        assert calls_url.endswith(CALLS_PATH)
        validate = urllib.request.Request(
            f"{base}/sessions/validate?sessionToken=demo-session-plain", headers=AUTH
        )
        with urllib.request.urlopen(validate, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(
            urllib.request.Request(calls_url, headers=AUTH), timeout=5
        ) as r:
            assert json.load(r)["calls"] == {"validateCustomerSession": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_head_is_answered_like_get(client: TestClient, method: str) -> None:
    resp = await client.request(method, CALLS_PATH)
    assert resp.status == 200
