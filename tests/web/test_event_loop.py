"""No gateway handler may block the event loop: every visitor is served from one loop.

Every test already runs under the loop-block guard (tests/conftest.py, 0.5 s). Here the
gateway's handlers are driven through every kind of answer with a much stricter threshold, and a
planted blocking call in the request path shows that the check would catch one.

The requests come from a process of its own, so that every step the loop runs is the
servers': most answers are made as the request is read (gateway.web.protocol,
"Answers made on arrival"), in the connection's read callback, where nothing tells a server's
step from a client's on the same loop.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import sys
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
    port = stack.gateway.port
    assert port is not None
    # A process of its own: client threads here would share the GIL with the loop's steps.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENTS, str(port), json.dumps(requests)
    )
    assert await process.wait() == 0


# Each request 20 times over one kept-alive connection (as a browser's), all at once.
_CLIENTS = """
import http.client, json, sys, threading
port, requests = int(sys.argv[1]), json.loads(sys.argv[2])
failed = []
def client(path, headers):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(20):
            connection.request("GET", path, headers=headers)
            connection.getresponse().read()
        connection.close()
    except Exception as exc:
        failed.append(exc)
threads = [threading.Thread(target=client, args=pair) for pair in requests]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.exit(1 if failed else 0)
"""


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
    # Every step of the loop is a server's (the clients are a process of their own) but this
    # test's own, which starts that process: forking a large test process can take a while.
    blocked = [
        entry
        for entry in loop_block_guard.blocked
        if "coro=<test_handlers_never_hold_the_loop()" not in entry
    ]
    loop_block_guard.blocked.clear()
    assert blocked == []


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
    port = stack.gateway.port
    assert port is not None

    def get() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/news")
            assert connection.getresponse().read()
        finally:
            connection.close()

    try:
        await asyncio.to_thread(get)  # a client thread: only the servers' steps on the loop
    finally:
        loop.slow_callback_duration = BLOCKING_THRESHOLD
    assert loop_block_guard.blocked  # caught (what the test above counts)
    loop_block_guard.blocked.clear()  # caught as expected: do not fail this test
