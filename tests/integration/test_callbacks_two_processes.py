"""The platform's callbacks cut through the caches of two gateway processes sharing one Redis.

Real processes on loopback (see conftest.py): the simulator plays the platform and posts its
callbacks to the first gateway only, as a platform does to one address behind a load balancer.
The second gateway learns of them through the shared tier. Every answer is asked for through
``/_paywall/auth``, the way nginx's auth_request asks.

"Within a second" is measured from the moment the simulator has taken the change, so it includes
the callback's delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.integration.conftest import (
    API_TOKEN,
    Gateway,
    Processes,
    RedisServer,
    Simulator,
    start_gateway,
    start_simulator,
)
from tests.integration.test_two_processes import Answer, ask, auth_headers, client

SECRET = "two-process-callback-secret-0123456789"
WITHIN = 1.0
NO_RIGHTS = "demo-session-no-rights"  # customer 100008: known, no access right
PLAIN = "demo-session-plain"  # customer 100001: premium and archive
# Answers and sessions cached for an hour: only an invalidation can change them within a second.
LONG_ACCESS = {"max_ttl": 3600, "default_ttl": 3600, "negative_ttl": 3600}
LONG_SESSIONS = {"session_ttl": 3600}


async def start_callback_stack(
    processes: Processes, redis_url: str, *, callback_tries: int = 5
) -> tuple[Simulator, Gateway, Gateway]:
    """The simulator, posting callbacks to the first of two gateways that cache for an hour."""
    platform_port, first_port = free_port(), free_port()
    platform_url = f"http://127.0.0.1:{platform_port}/api/v3.0"
    callback_url = f"http://127.0.0.1:{first_port}/_paywall/callbacks/{SECRET}"
    gateway: dict[str, Any] = {
        "platform_url": platform_url,
        "redis_url": redis_url,
        "access": LONG_ACCESS,
        # Not the default 0.1 s: on a loaded machine a Redis round trip can outlast it, and the
        # second process would then ask the platform itself (these tests count those calls).
        "cache": {**LONG_SESSIONS, "redis_timeout": 1.0},
        "callbacks": {"secret": SECRET},
    }
    simulator, first, second = await asyncio.gather(
        start_simulator(
            processes,
            port=platform_port,
            latency=0.0,
            callback_url=callback_url,
            callback_tries=callback_tries,
        ),
        start_gateway(processes, "gateway-1", port=first_port, **gateway),
        start_gateway(processes, "gateway-2", **gateway),
    )
    return simulator, first, second


def sandbox_url(simulator: Simulator, path: str) -> str:
    return simulator.base_url.rsplit("/api/", 1)[0] + path


async def platform_change(
    http: aiohttp.ClientSession, simulator: Simulator, method: str, path: str, **body: str
) -> None:
    """A change on the platform (``/_sandbox/...``), which sends its callbacks."""
    headers = {"X-plenigo-token": API_TOKEN}
    url = sandbox_url(simulator, path)
    async with http.request(method, url, json=body or None, headers=headers) as response:
        assert response.status in (200, 201), await response.text()


async def deliveries(http: aiohttp.ClientSession, simulator: Simulator) -> list[dict[str, Any]]:
    headers = {"X-plenigo-token": API_TOKEN}
    async with http.get(sandbox_url(simulator, "/_sandbox/callbacks"), headers=headers) as r:
        assert r.status == 200, await r.text()
        found: list[dict[str, Any]] = (await r.json())["deliveries"]
        return found


async def cached_on_both(
    http: aiohttp.ClientSession, gateways: tuple[Gateway, Gateway], token: str, expected: int
) -> None:
    """Both processes answer ``expected`` and hold the answer: a second ask is a cache hit."""
    for gateway in gateways:
        first = await ask(http, gateway, auth_headers("/premium/a", token))
        assert first.status == expected, first
        again = await ask(http, gateway, auth_headers("/premium/a", token))
        assert again.status == expected, again
        assert (again.cache or "").startswith("hit"), again


async def turns_on_both(
    http: aiohttp.ClientSession,
    gateways: tuple[Gateway, Gateway],
    token: str,
    expected: Callable[[Answer], bool],
    *,
    since: float,
    within: float = WITHIN,
) -> list[float]:
    """Seconds from ``since`` until each process answers as ``expected`` (fails after
    ``within``); once turned, each must keep answering so."""
    loop = asyncio.get_running_loop()
    turned: list[float] = []
    for gateway in gateways:
        while True:
            answer = await ask(http, gateway, auth_headers("/premium/a", token))
            elapsed = loop.time() - since
            if expected(answer):
                turned.append(elapsed)
                break
            assert elapsed < within, f"{gateway.port} still answers {answer} after {elapsed:.2f}s"
            await asyncio.sleep(0.01)
    for gateway in gateways:
        answer = await ask(http, gateway, auth_headers("/premium/a", token))
        assert expected(answer), answer
    print(f"turned after {', '.join(f'{t * 1000:.0f} ms' for t in turned)}")  # for -s runs
    return turned


def granted(answer: Answer) -> bool:
    return answer.status == 200 and answer.access == "granted"


def denied(answer: Answer) -> bool:
    return answer.status in (401, 403) and answer.access not in (None, "granted")


async def test_buy_cancel_and_block_turn_both_processes_within_a_second(
    processes: Processes, redis_server: RedisServer
) -> None:
    simulator, first, second = await start_callback_stack(processes, redis_server.url)
    both = (first, second)
    loop = asyncio.get_running_loop()
    async with client() as http:
        # A purchase opens the paywall although both processes cached the denial for an hour.
        await cached_on_both(http, both, NO_RIGHTS, 403)
        checks = (await simulator.calls(http)).get("checkAccessOfCustomer", 0)
        since = loop.time()
        await platform_change(
            http, simulator, "POST", "/_sandbox/customers/100008/buy", accessRightUniqueId="premium"
        )
        await turns_on_both(http, both, NO_RIGHTS, granted, since=since)
        assert (await simulator.calls(http))["checkAccessOfCustomer"] > checks

        # A cancellation that ends the right now closes it again, although the grant is cached.
        await cached_on_both(http, both, NO_RIGHTS, 200)
        since = loop.time()
        await platform_change(
            http,
            simulator,
            "POST",
            "/_sandbox/customers/100008/cancel",
            accessRightUniqueId="premium",
        )
        await turns_on_both(http, both, NO_RIGHTS, denied, since=since)

        # Blocking a customer closes every right of hers; unblocking opens them again.
        await cached_on_both(http, both, PLAIN, 200)
        since = loop.time()
        await platform_change(http, simulator, "POST", "/_sandbox/customers/100001/block")
        await turns_on_both(http, both, PLAIN, denied, since=since)
        since = loop.time()
        await platform_change(http, simulator, "POST", "/_sandbox/customers/100001/unblock")
        await turns_on_both(http, both, PLAIN, granted, since=since)

        sent = [
            (d["entityType"], d["callbackType"], d["status"])
            for d in await deliveries(http, simulator)
        ]
        assert ("SUBSCRIPTION", "CREATION", "sent") in sent
        assert ("SUBSCRIPTION", "CANCELLATION", "sent") in sent
        assert sent.count(("CUSTOMER", "CHANGE", "sent")) == 2
        assert all(status == "sent" for _, _, status in sent), sent
        # Only the first process was called; the second learnt it all through the shared tier.
        assert await first.metric(http, "paywall_callbacks_total", result="invalidated") >= 5
        assert await second.metric(http, "paywall_callbacks_total") == 0


async def test_a_deleted_customer_s_session_is_rejected_on_both_processes_within_a_second(
    processes: Processes, redis_server: RedisServer
) -> None:
    simulator, first, second = await start_callback_stack(processes, redis_server.url)
    both = (first, second)
    async with client() as http:
        await cached_on_both(http, both, PLAIN, 200)
        validations = (await simulator.calls(http)).get("validateCustomerSession", 0)
        assert validations == 1  # one validation, shared by both processes through Redis
        since = asyncio.get_running_loop().time()
        await platform_change(http, simulator, "DELETE", "/_sandbox/customers/100001")

        def rejected(answer: Answer) -> bool:
            # The session no longer names a customer: the visitor is anonymous again.
            return answer.status == 401 and answer.customer_id is None

        await turns_on_both(http, both, PLAIN, rejected, since=since)
        sent = [
            (d["entityType"], d["callbackType"], d["status"])
            for d in await deliveries(http, simulator)
        ]
        assert sent == [("CUSTOMER", "DELETION", "sent")]


async def test_redis_down_during_a_callback_answers_503_and_the_retry_makes_it_right(
    processes: Processes, redis_server: RedisServer
) -> None:
    # Tries back off 0.1 s doubling to 2 s: twelve tries span about 17 s.
    simulator, first, second = await start_callback_stack(
        processes, redis_server.url, callback_tries=12
    )
    both = (first, second)
    loop = asyncio.get_running_loop()
    async with client() as http:
        await platform_change(
            http, simulator, "POST", "/_sandbox/customers/100008/buy", accessRightUniqueId="premium"
        )
        await turns_on_both(http, both, NO_RIGHTS, granted, since=loop.time())
        await cached_on_both(http, both, NO_RIGHTS, 200)

        await redis_server.kill()
        await platform_change(
            http,
            simulator,
            "POST",
            "/_sandbox/customers/100008/cancel",
            accessRightUniqueId="premium",
        )

        async def refused_once() -> dict[str, Any] | None:
            for delivery in await deliveries(http, simulator):
                if delivery["callbackType"] == "CANCELLATION" and delivery["lastStatus"] == 503:
                    return delivery
            return None

        deadline = loop.time() + 10
        while (refused := await refused_once()) is None:
            assert loop.time() < deadline, await deliveries(http, simulator)
            await asyncio.sleep(0.02)
        assert refused["status"] == "pending"  # the platform will come again
        assert await first.metric(http, "paywall_callbacks_total", result="unavailable") >= 1

        await redis_server.start()
        deadline = loop.time() + 20
        while True:
            cancellation = [
                d for d in await deliveries(http, simulator) if d["callbackType"] == "CANCELLATION"
            ]
            if cancellation and cancellation[0]["status"] != "pending":
                break
            assert loop.time() < deadline, cancellation
            await asyncio.sleep(0.05)
        assert cancellation[0]["status"] == "sent", cancellation
        assert cancellation[0]["attempts"] >= 2
        # After the retry went through, both processes deny. The second may hear of it only
        # when its bus reconnects (every 0.5 s, on its own schedule): not the one-second case.
        await turns_on_both(http, both, NO_RIGHTS, denied, since=loop.time(), within=2.0)
