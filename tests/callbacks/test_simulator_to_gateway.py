"""End to end: the simulator, playing the platform, sends its callbacks to the gateway's
receiver, which cuts through the cached denial without waiting for any TTL."""

from __future__ import annotations

import asyncio

from gateway.sandbox.app import STATE
from tests.web.conftest import API_TOKEN, StartStack

SECRET = "sim-to-gateway-secret-0123456789"
COOKIE = "paywall_session"


async def test_a_purchase_in_the_simulator_opens_the_paywall_within_a_second(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(callbacks={"secret": SECRET})
    state = stack.platform.app[STATE]
    state.callbacks.url = stack.url(f"/_paywall/callbacks/{SECRET}")
    cookies = {COOKIE: "demo-session-no-rights"}  # customer 100008
    assert (await stack.get("/premium/a", cookies=cookies)).status == 403
    assert (await stack.get("/premium/a", cookies=cookies)).status == 403  # cached denial
    checks = state.calls.count("checkAccessOfCustomer")
    assert checks == 1  # the second answer came from the cache

    loop = asyncio.get_running_loop()
    started = loop.time()
    buy = stack.platform.make_url("/_sandbox/customers/100008/buy")
    headers = {"X-plenigo-token": API_TOKEN}
    async with stack.http.post(buy, json={"accessRightUniqueId": "premium"}, headers=headers) as r:
        assert r.status == 201
    status = 403
    while loop.time() - started < 1.0:  # the clock of every TTL stands still
        status = (await stack.get("/premium/a", cookies=cookies)).status
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200
    assert state.calls.count("checkAccessOfCustomer") > checks  # asked again
    delivered = [(d.body["entityType"], d.status) for d in state.callbacks.deliveries]
    assert sorted(delivered) == [("ORDER", "sent"), ("SUBSCRIPTION", "sent")]
