"""gateway.wsgi.PaywallMiddleware's threads: what runs on the calling thread (peek) and what on
the loop thread, many threads at once, fork, exit and close."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.wsgi import EXIT_TIMEOUT
from tests.conftest import REPO_ROOT
from tests.service.conftest import ManualClock
from tests.wsgi.conftest import (
    NO_RIGHTS_COOKIE,
    PLAIN_COOKIE,
    CountingSubmits,
    Make,
    ThreadedSimulator,
    call,
    config_toml,
    platform_calls,
    settings_sections,
)

# --- peek on the calling thread, misses on the loop thread -------------------------------------


def test_miss_goes_through_the_loop_thread_once(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    middleware, _ = make()
    submits = CountingSubmits(monkeypatch)
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200
    assert submits.count == 1
    assert platform_calls(middleware, "validate_session") == 1
    assert platform_calls(middleware, "has_access") == 1


def test_cached_grant_is_answered_without_the_loop_thread(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    middleware, app = make(timeout=0.5)
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200  # the miss
    submits = CountingSubmits(monkeypatch)
    # Freeze the loop thread: anything that needs it now waits for the timeout.
    frozen, release = threading.Event(), threading.Event()

    def freeze() -> None:
        frozen.set()
        release.wait(30)

    loop = middleware._loop_thread()._loop
    assert loop is not None
    loop.call_soon_threadsafe(freeze)
    assert frozen.wait(5)
    try:
        slowest = 0.0
        for _ in range(50):
            started = time.perf_counter()
            result = call(middleware, "/premium/b", headers=PLAIN_COOKIE)
            slowest = max(slowest, time.perf_counter() - started)
            assert result.status == 200
            assert app.last["HTTP_X_PAYWALL_CACHE"] == "hit"
        assert slowest < 0.45  # none waited for the frozen loop (it would wait 0.5 s)
        assert submits.count == 0
        # A miss does need the loop: it waits for the bound, then the policy's 503.
        miss = call(middleware, "/premium/a", headers=NO_RIGHTS_COOKIE)
        assert miss.status == 503
        assert submits.count == 1
    finally:
        release.set()
    # The cache-hit metrics are those of the async path: one per request and cache.
    hits = middleware.metrics.value(
        "paywall_cache_lookups_total", {"cache": "access", "tier": "l1", "result": "hit"}
    )
    assert hits == 50


def test_refresh_ahead_is_handed_to_the_loop_without_waiting(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(datetime.now(UTC))
    middleware, app = make(clock=clock, cache={"refresh_ahead": 10})
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200
    clock.advance(55)  # the access answer (60 s) is in its last 10 s: due for a refresh
    submits = CountingSubmits(monkeypatch)
    result = call(middleware, "/premium/a", headers=PLAIN_COOKIE)
    assert result.status == 200
    assert app.last["HTTP_X_PAYWALL_CACHE"] == "hit"
    assert submits.count == 0  # answered on this thread; the refresh went to the loop
    value = middleware.metrics.value
    deadline = time.monotonic() + 5
    labels = {"cache": "access", "result": "succeeded"}
    while value("paywall_refreshes_total", labels) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert value("paywall_refreshes_total", {"cache": "access", "result": "started"}) == 1
    assert value("paywall_refreshes_total", labels) == 1
    assert platform_calls(middleware, "has_access") == 2


def test_many_threads_at_once(make: Make) -> None:
    middleware, _ = make()
    cases = [
        ("/articles/a", {}, 200),
        ("/premium/a", PLAIN_COOKIE, 200),
        ("/premium/a", NO_RIGHTS_COOKIE, 403),
        ("/premium/a", {}, 303),
        ("/archive/a", PLAIN_COOKIE, 200),
        ("/premium/a", {"Cookie": "paywall_session=unknown-session"}, 303),
    ]
    errors: list[str] = []

    def worker(index: int) -> None:
        for n in range(50):
            target, headers, status = cases[(index + n) % len(cases)]
            try:
                got = call(middleware, target, headers=headers).status
            except Exception as exc:  # collected: the test fails with all of them
                errors.append(f"{target}: {exc!r}")
            else:
                if got != status:
                    errors.append(f"{target} {headers}: {got} != {status}")

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(worker, index) for index in range(32)]
        for future in futures:
            future.result(timeout=60)
    assert errors == []
    assert time.perf_counter() - started < 60
    # Concurrent misses of one key shared their platform calls (one loop, one single-flight).
    assert platform_calls(middleware, "validate_session") <= 3 * 3


# --- fork and exit ------------------------------------------------------------------------------


def test_forked_child_starts_its_own_loop_thread(make: Make) -> None:
    middleware, app = make()
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200
    parent_loop = middleware._loop_thread()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer, report, leave without running the parent's cleanup
        code = 1
        try:
            os.close(read_end)
            result = call(middleware, "/premium/a", headers=PLAIN_COOKIE)
            child_loop = middleware._loop_thread()
            report = {
                "status": result.status,
                "customer": app.last.get("HTTP_X_PAYWALL_CUSTOMER_ID"),
                "new_loop": child_loop is not parent_loop and child_loop.thread.is_alive(),
                "loop_threads": sum(
                    t.name == "paywall-wsgi-loop" and t.is_alive() for t in threading.enumerate()
                ),
            }
            os.write(write_end, json.dumps(report).encode())
            code = 0 if middleware.close(5) else 2
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        report = json.loads(os.read(read_end, 4096)) if ready else None
        deadline = time.monotonic() + 20
        while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        if waited == (0, 0):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish within 20 s")
    finally:
        os.close(read_end)
    assert report == {"status": 200, "customer": "100001", "new_loop": True, "loop_threads": 1}
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    # The parent's loop thread and runtime were left alone by the child.
    assert middleware._loop_thread() is parent_loop
    assert call(middleware, "/premium/c", headers=NO_RIGHTS_COOKIE).status == 403


_EXIT_SCRIPT = """
import atexit, sys, time, threading
from gateway.wsgi import PaywallMiddleware

@atexit.register  # registered first, so it runs after the middleware's own exit hook
def report():
    alive = any(t.name == "paywall-wsgi-loop" and t.is_alive() for t in threading.enumerate())
    print("loop thread alive at exit:", alive, flush=True)

from tests.wsgi.conftest import EchoApp, call
middleware = PaywallMiddleware(EchoApp(), config=sys.argv[1])
result = call(middleware, "/premium/a", headers={"Cookie": "paywall_session=demo-session-plain"})
print(result.status, flush=True)
if sys.argv[2] == "stuck":  # a loop thread that will not stop: exit must not wait for it
    middleware._loop_thread()._loop.call_soon_threadsafe(time.sleep, 60)
    time.sleep(0.2)
"""


@pytest.mark.parametrize(("mode", "bound"), [("clean", 8.0), ("stuck", EXIT_TIMEOUT + 6)])
def test_process_exits_without_hanging(
    simulator: ThreadedSimulator, tmp_path: Path, mode: str, bound: float
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_toml(settings_sections(simulator)))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _EXIT_SCRIPT, str(config), mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < bound, f"exit took {elapsed:.1f} s"
    if mode == "clean":  # the runtime closed and the loop stopped, before the process ended
        assert done.stdout.split("\n")[:2] == ["200", "loop thread alive at exit: False"]
        assert "Unclosed" not in done.stderr, done.stderr
        assert "Task was destroyed" not in done.stderr, done.stderr
    else:  # gave up after the bounded join, said so, and exited all the same
        assert done.stdout.split("\n")[:2] == ["200", "loop thread alive at exit: True"]
        assert "did not close" in done.stderr


def test_close_while_the_loop_thread_starts_does_not_wait_for_it(make: Make) -> None:
    middleware, _ = make()
    loop = middleware._loop_thread()  # starting: the runtime may not be open yet
    started = time.monotonic()
    assert middleware.close(5)
    assert time.monotonic() - started < 2
    assert not loop.thread.is_alive()
    # A later request starts a new one.
    assert call(middleware, "/premium/a", headers=PLAIN_COOKIE).status == 200
