"""The callbacks the simulator sends, as the platform would (seed 003), and their delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.sandbox.app import SandboxOptions, create_app
from gateway.sandbox.callbacks import CallbackSender
from gateway.sandbox.model import SandboxData
from gateway.sandbox.state import STATE
from tests.conftest import free_port
from tests.sandbox.conftest import API, ClientFactory
from tests.service.processes import eventually

TOKEN = "sim-token"
AUTH = {"X-plenigo-token": TOKEN}


@dataclass
class Receiver:
    """A tiny callback receiver on loopback: records every post, answers ``statuses`` in turn
    (then 200)."""

    server: TestServer
    posts: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook/s3cret"))

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((p["entityType"], p["callbackType"]) for p in self.posts)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    server = TestServer(app)
    recorder = Receiver(server)

    async def receive(request: web.Request) -> web.Response:
        recorder.content_types.append(request.headers.get("Content-Type", ""))
        recorder.posts.append(await request.json())
        status = recorder.statuses.pop(0) if recorder.statuses else 200
        return web.Response(status=status)

    app.router.add_post("/hook/s3cret", receive)
    await server.start_server()
    yield recorder
    await server.close()


async def simulator(make_client: ClientFactory, url: str | None, **options: Any) -> TestClient:
    return await make_client(SandboxOptions(api_token=TOKEN, callback_url=url, **options))


def sender(client: TestClient) -> CallbackSender:
    return client.app[STATE].callbacks  # type: ignore[index, no-any-return]


async def deliveries(client: TestClient) -> dict[str, Any]:
    response = await client.get("/_sandbox/callbacks", headers=AUTH)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def buy(client: TestClient, customer: str, right: str = "premium") -> dict[str, Any]:
    url = f"/_sandbox/customers/{customer}/buy"
    response = await client.post(url, json={"accessRightUniqueId": right}, headers=AUTH)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def granted(client: TestClient, customer: str, right: str = "premium") -> bool:
    url = f"{API}/accessRights/{customer}/hasAccess"
    response = await client.get(url, params={"accessRightUniqueIds": right}, headers=AUTH)
    assert response.status == 200
    return bool((await response.json())["accessGranted"])


async def test_buy_sends_subscription_and_order_creation(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    client = await simulator(make_client, receiver.url)
    assert not await granted(client, "100008")
    bought = await buy(client, "100008")
    assert await granted(client, "100008")
    await sender(client).drain()
    assert receiver.kinds() == [("ORDER", "CREATION"), ("SUBSCRIPTION", "CREATION")]
    assert receiver.content_types == ["application/json"] * 2
    by_type = {p["entityType"]: p for p in receiver.posts}
    subscription, order = by_type["SUBSCRIPTION"], by_type["ORDER"]
    assert subscription["entityId"] == str(bought["subscriptionId"])
    assert subscription["entity"]["invoiceCustomerId"] == "100008"
    assert subscription["entity"]["deliveryCustomerId"] == "100008"
    assert subscription["entity"]["status"] == "ACTIVE"
    assert order["entityId"] == str(bought["orderId"])
    assert order["entity"]["invoiceCustomerId"] == 100008  # a number, as in v3's example
    assert [i["deliveryCustomerId"] for i in order["entity"]["items"]] == ["100008"]
    listed = await deliveries(client)
    assert (listed["sent"], listed["failed"], listed["pending"]) == (2, 0, 0)
    assert all(d["attempts"] == 1 and d["lastStatus"] == 200 for d in listed["deliveries"])


async def test_cancel_at_once_sends_cancellation_and_ended(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    client = await simulator(make_client, receiver.url)
    await buy(client, "100008")
    await sender(client).drain()
    receiver.posts.clear()
    url = "/_sandbox/customers/100008/cancel"
    response = await client.post(url, json={"accessRightUniqueId": "premium"}, headers=AUTH)
    assert response.status == 200
    assert not await granted(client, "100008")
    await sender(client).drain()
    assert [p["callbackType"] for p in receiver.posts] == ["CANCELLATION", "ENDED"]
    for post in receiver.posts:
        assert post["entityType"] == "SUBSCRIPTION"
        assert post["entity"]["invoiceCustomerId"] == "100008"
        assert post["entity"]["deliveryCustomerId"] == "100008"
    # nothing left to cancel
    again = await client.post(url, json={"accessRightUniqueId": "premium"}, headers=AUTH)
    assert again.status == 404


async def test_cancel_at_period_end_sends_only_cancellation(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    client = await simulator(make_client, receiver.url)
    await buy(client, "100008")
    await sender(client).drain()
    receiver.posts.clear()
    body = {"accessRightUniqueId": "premium", "endDate": "+1d"}
    response = await client.post("/_sandbox/customers/100008/cancel", json=body, headers=AUTH)
    assert response.status == 200
    assert await granted(client, "100008")  # until the end date
    await sender(client).drain()
    assert receiver.kinds() == [("SUBSCRIPTION", "CANCELLATION")]
    assert receiver.posts[0]["entity"]["status"] == "CANCELLED"


async def test_customer_block_unblock_and_delete(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    client = await simulator(make_client, receiver.url)
    assert (await client.post("/_sandbox/customers/100001/block", headers=AUTH)).status == 200
    assert not await granted(client, "100001")
    await sender(client).drain()
    assert (await client.post("/_sandbox/customers/100001/unblock", headers=AUTH)).status == 200
    assert await granted(client, "100001")
    await sender(client).drain()
    assert (await client.delete("/_sandbox/customers/100001", headers=AUTH)).status == 200
    await sender(client).drain()
    assert [(p["callbackType"], p["entityId"]) for p in receiver.posts] == [
        ("CHANGE", "100001"),
        ("CHANGE", "100001"),
        ("DELETION", "100001"),
    ]
    statuses = [p["entity"]["status"] for p in receiver.posts[:2]]
    assert statuses == ["BLOCKED", "ACTIVATED"]
    assert receiver.posts[2]["entity"] is None
    # the customer and its sessions are gone
    validate = await client.get(
        f"{API}/sessions/validate", params={"sessionToken": "demo-session-plain"}, headers=AUTH
    )
    assert validate.status == 401
    gone = await client.delete("/_sandbox/customers/100001", headers=AUTH)
    assert gone.status == 404


async def test_direct_access_right_edits_send_nothing(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    client = await simulator(make_client, receiver.url)
    create = await client.post(
        f"{API}/accessRights/100008", json={"accessRightUniqueId": "premium"}, headers=AUTH
    )
    assert create.status == 201, await create.text()
    unblock = await client.put(f"{API}/accessRights/100004/premium/7006/unblock", headers=AUTH)
    assert unblock.status == 202
    delete = await client.delete(f"{API}/accessRights/100008/premium", headers=AUTH)
    assert delete.status == 202
    await sender(client).drain()
    await asyncio.sleep(0.05)
    assert receiver.posts == []
    assert (await deliveries(client))["deliveries"] == []


async def test_a_failing_receiver_gets_the_callback_again(
    make_client: ClientFactory, receiver: Receiver
) -> None:
    receiver.statuses = [503, 503]
    client = await simulator(make_client, receiver.url, callback_backoff=0.01)
    assert (await client.post("/_sandbox/customers/100001/block", headers=AUTH)).status == 200

    async def delivered() -> bool:  # as a test of another process would: poll the listing
        return (await deliveries(client))["pending"] == 0

    await eventually(delivered, within=10)
    assert len(receiver.posts) == 3
    [delivery] = (await deliveries(client))["deliveries"]
    assert (delivery["status"], delivery["attempts"], delivery["lastStatus"]) == ("sent", 3, 200)


async def test_a_receiver_that_is_down_is_tried_a_bounded_number_of_times(
    make_client: ClientFactory,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    # Backoffs of 0.5 s and 1 s: the delivery takes at least 1.5 s, so an answer that waited
    # for it would find it finished (no wall-clock bound: a loaded machine is slow to answer).
    client = await simulator(make_client, url, callback_tries=3, callback_backoff=0.5)
    response = await client.post("/_sandbox/customers/100001/block", headers=AUTH)
    assert response.status == 200
    [pending] = sender(client).deliveries
    assert pending.status == "pending"  # the answer does not wait for the delivery
    await sender(client).drain()
    listed = await deliveries(client)
    [delivery] = listed["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    assert delivery["lastError"]
    assert delivery["lastStatus"] is None
    assert listed["failed"] == 1
    assert url not in str(listed)  # the URL (it may hold a secret) is not shown


async def test_no_callback_url_sends_nothing(make_client: ClientFactory) -> None:
    client = await simulator(make_client, None)
    await buy(client, "100008")
    assert (await client.post("/_sandbox/customers/100001/block", headers=AUTH)).status == 200
    assert list(sender(client).deliveries) == []
    assert (await deliveries(client))["deliveries"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/_sandbox/customers/100008/buy"),
        ("POST", "/_sandbox/customers/100008/cancel"),
        ("POST", "/_sandbox/customers/100008/block"),
        ("DELETE", "/_sandbox/customers/100008"),
        ("GET", "/_sandbox/callbacks"),
    ],
)
async def test_operations_ask_for_the_api_token(
    make_client: ClientFactory, method: str, path: str
) -> None:
    client = await simulator(make_client, None)
    response = await client.request(method, path, json={"accessRightUniqueId": "premium"})
    assert response.status == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"accessRightUniqueId": "x"}, {"accessRightUniqueId": 7}, ["premium"]],
)
async def test_buy_validates_its_body(make_client: ClientFactory, body: Any) -> None:
    client = await simulator(make_client, None)
    response = await client.post("/_sandbox/customers/100008/buy", json=body, headers=AUTH)
    assert response.status == 400
    unknown = await client.post(
        "/_sandbox/customers/999999/buy", json={"accessRightUniqueId": "premium"}, headers=AUTH
    )
    assert unknown.status == 404


async def test_shutdown_stops_pending_deliveries(
    aiohttp_client: Any, seed_data: SandboxData, receiver: Receiver
) -> None:
    receiver.statuses = [503] * 10
    app = create_app(
        seed_data, SandboxOptions(callback_url=receiver.url, callback_tries=10, callback_backoff=2)
    )
    client = await aiohttp_client(app)
    assert (await client.post("/_sandbox/customers/100001/block")).status == 200
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.close()
    assert loop.time() - started < 3
    [delivery] = app[STATE].callbacks.deliveries
    assert delivery.status == "cancelled"
