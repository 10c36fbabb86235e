"""No gateway handler may block the event loop: every visitor is served from one loop.

Every test already runs under the loop-block guard (tests/conftest.py, 0.5 s). Here the
gateway's handlers are driven through every kind of answer with a much stricter threshold, and a
planted blocking call in the request path shows that the check would catch one.
"""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from gateway.web import handlers
from tests.conftest import BLOCKING_THRESHOLD, LoopBlockGuard
from tests.web.conftest import Stack, StartStack

STRICT = 0.1  # seconds: far above any honest handler step (debug mode, a busy 2-core CI)


async def _drive(stack: Stack, auth_mode: bool) -> None:
    plain = {"Cookie": "paywall_session=demo-session-plain"}
    none = {"Cookie": "paywall_session=demo-session-no-rights"}
    if auth_mode:
        requests = [
            ("/_paywall/auth", {"X-Original-URI": "/premium/a", **plain}),
            ("/_paywall/auth", {"X-Original-URI": "/premium/a", **none}),
            ("/_paywall/auth", {"X-Original-URI": "/premium/a"}),
            ("/_paywall/deny", {"X-Original-URI": "/premium/a", **none}),
            ("/_paywall/deny", {"X-Original-URI": "/premium/%2fa"}),
        ]
    else:
        requests = [
            ("/news", {}),
            ("/premium/a", plain),
            ("/premium/a", none),
            ("/premium/a", {}),
            ("/premium%2fa", {}),
        ]
    for _ in range(20):
        await asyncio.gather(*(stack.get(path, headers=headers) for path, headers in requests))


@pytest.mark.parametrize("auth_mode", [False, True], ids=["proxy", "auth_request"])
async def test_handlers_never_hold_the_loop(
    start_stack: StartStack, loop_block_guard: LoopBlockGuard, auth_mode: bool
) -> None:
    stack = await start_stack(server={"mode": "auth_request"} if auth_mode else {})
    await _drive(stack, auth_mode)  # warm-up: first-use imports and connection set-up
    loop_block_guard.blocked.clear()
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = STRICT
    # A full garbage collection of the (large, late-in-the-suite) test process can pause any
    # step for ~0.1 s: that is not a handler blocking, so it is kept out of the measurement.
    gc.collect()
    gc.disable()
    try:
        await _drive(stack, auth_mode)
    finally:
        gc.enable()
        loop.slow_callback_duration = BLOCKING_THRESHOLD
    # The test's own client shares the loop; only the gateway's (server-side) steps count here:
    # aiohttp runs every request handler in a RequestHandler task.
    server_side = [entry for entry in loop_block_guard.blocked if "RequestHandler" in entry]
    loop_block_guard.blocked.clear()
    assert server_side == []


async def test_a_blocking_call_in_the_request_path_is_caught(
    start_stack: StartStack, loop_block_guard: LoopBlockGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await start_stack()

    def blocking_clock() -> float:
        time.sleep(STRICT * 3)  # the planted blocking call
        return time.perf_counter()

    # The driver reads this clock first thing for every request. A module global of the
    # standard library's: a compiled build (gateway/compiled.py) looks those up at each call,
    # while a call between its own modules or methods goes past anything a test replaces.
    monkeypatch.setattr(handlers, "perf_counter", blocking_clock)
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = STRICT
    try:
        await stack.get("/news")
    finally:
        loop.slow_callback_duration = BLOCKING_THRESHOLD
    # Caught, and attributed to a server-side handler task (what the test above counts).
    assert any("RequestHandler" in entry for entry in loop_block_guard.blocked)
    loop_block_guard.blocked.clear()  # caught as expected: do not fail this test
