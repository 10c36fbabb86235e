"""Simulator-only operations under ``/_sandbox/`` (not part of the plenigo API): what a customer
or the merchant does on the platform, each sending the callback the platform would send.

* ``POST /_sandbox/customers/{customerId}/buy`` ``{"accessRightUniqueId": "premium"}`` -> 201:
  a subscription-backed access right from now on (an item of type ``SUBSCRIPTION`` whose id is
  the subscription id); callbacks ``SUBSCRIPTION`` / ``CREATION`` and ``ORDER`` / ``CREATION``.
* ``POST /_sandbox/customers/{customerId}/cancel`` ``{"accessRightUniqueId": "premium",
  "endDate": "..."}`` -> 200: cancels the customer's active subscriptions of that right;
  ``endDate`` (an instant, ``now`` or ``+2m``; default now) is when the right ends.
  ``SUBSCRIPTION`` / ``CANCELLATION``, and ``ENDED`` too when it ends at once.
* ``POST /_sandbox/customers/{customerId}/block`` and ``.../unblock`` -> 200: the customer's
  status; ``CUSTOMER`` / ``CHANGE``.
* ``DELETE /_sandbox/customers/{customerId}`` -> 200: the customer, its sessions and its
  subscriptions are gone; ``CUSTOMER`` / ``DELETION`` (entity null).
* ``GET /_sandbox/callbacks``: the deliveries so far (see
  :meth:`~gateway.sandbox.callbacks.CallbackSender.snapshot`).

Every one asks for the API's ``X-plenigo-token`` (when set); none adds latency, injects
failures or is counted in ``/_sandbox/calls``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.sandbox import api_errors, params
from gateway.sandbox.api_errors import ApiError, FieldError
from gateway.sandbox.data import parse_instant
from gateway.sandbox.model import ACCESS_RIGHT_ID_PATTERN, AccessRightItem, Subscription
from gateway.sandbox.state import STATE, SandboxState

__all__ = ["ROUTES"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NO_STORE = {"Cache-Control": "no-store"}


def _guarded(handler: Handler) -> Handler:
    """The API token check and the API's error bodies, nothing else."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            request.app[STATE].check_api_token(request)
            return await handler(request)
        except ApiError as error:
            return error.to_response()

    return wrapped


def _right_id(body: dict[str, object]) -> str:
    value = body.get("accessRightUniqueId")
    if not isinstance(value, str) or not ACCESS_RIGHT_ID_PATTERN.match(value):
        raise api_errors.bad_request(FieldError("accessRightUniqueId", "pattern", str(value)[:200]))
    return value


async def _body(request: web.Request) -> dict[str, object]:
    return params.json_object(await params.json_body(request))


def _subscription_json(subscription: Subscription) -> dict[str, Any]:
    return {
        "subscriptionId": subscription.subscription_id,
        "orderId": subscription.order_id,
        "customerId": subscription.customer_id,
        "accessRightUniqueId": subscription.item.access_right_unique_id,
        "status": subscription.status,
        "startDate": subscription.start.isoformat(),
        "endDate": subscription.end.isoformat() if subscription.end else None,
    }


async def buy(request: web.Request) -> web.Response:
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    right_id = _right_id(await _body(request))
    now = state.now()
    item_id = state.data.next_item_id()
    item = AccessRightItem(
        access_right_unique_id=right_id,
        item_id=item_id,
        item_type="SUBSCRIPTION",
        life_time_start=now,
        created_date=now,
        changed_date=now,
        created_by=customer.customer_id,
        created_by_type="CUSTOMER",
        changed_by=customer.customer_id,
        changed_by_type="CUSTOMER",
    )
    customer.items.append(item)
    customer.changed_date = now
    subscription = Subscription(
        subscription_id=int(item_id),
        order_id=next(state.order_ids),
        customer_id=customer.customer_id,
        item=item,
        start=now,
        changed_date=now,
    )
    state.subscriptions[subscription.subscription_id] = subscription
    state.callbacks.subscription("CREATION", subscription)
    state.callbacks.order_created(subscription)
    return web.json_response(_subscription_json(subscription), status=201, headers=_NO_STORE)


async def cancel(request: web.Request) -> web.Response:
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    body = await _body(request)
    right_id = _right_id(body)
    now = state.now()
    raw_end = body.get("endDate", "now")
    try:
        end = parse_instant(raw_end, now) if isinstance(raw_end, str) else None
    except ValueError:
        end = None
    if end is None:
        raise api_errors.bad_request(FieldError("endDate", "instant", str(raw_end)[:200]))
    active = [
        s
        for s in state.subscriptions.values()
        if s.customer_id == customer.customer_id
        and s.item.access_right_unique_id == right_id
        and s.status == "ACTIVE"
    ]
    if not active:
        raise api_errors.not_found()
    ended = end <= now
    for subscription in active:
        subscription.status = "ENDED" if ended else "CANCELLED"
        subscription.end, subscription.cancellation_date = end, now
        subscription.changed_date = now
        subscription.item.life_time_end = end
        subscription.item.changed_date = now
        state.callbacks.subscription("CANCELLATION", subscription)
        if ended:
            state.callbacks.subscription("ENDED", subscription)
    customer.changed_date = now
    answer = {"subscriptions": [_subscription_json(s) for s in active]}
    return web.json_response(answer, headers=_NO_STORE)


async def _set_blocked(request: web.Request, blocked: bool) -> web.Response:
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    customer.blocked = blocked
    customer.changed_date = state.now()
    state.callbacks.customer_changed(customer)
    answer = {"customerId": customer.customer_id, "blocked": blocked}
    return web.json_response(answer, headers=_NO_STORE)


async def block(request: web.Request) -> web.Response:
    return await _set_blocked(request, True)


async def unblock(request: web.Request) -> web.Response:
    return await _set_blocked(request, False)


def _delete_customer(state: SandboxState, customer_id: str) -> None:
    del state.data.customers[customer_id]
    for token in [t for t, s in state.data.sessions.items() if s.customer_id == customer_id]:
        del state.data.sessions[token]
    for key in [k for k, s in state.subscriptions.items() if s.customer_id == customer_id]:
        del state.subscriptions[key]


async def delete_customer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    _delete_customer(state, customer.customer_id)
    state.callbacks.customer_deleted(customer.customer_id)
    return web.json_response({"success": True}, headers=_NO_STORE)


async def callbacks(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].callbacks.snapshot(), headers=_NO_STORE)


_CUSTOMER = "/_sandbox/customers/{customerId}"
ROUTES: tuple[tuple[str, str, Handler], ...] = tuple(
    (method, path, _guarded(handler))
    for method, path, handler in (
        ("POST", _CUSTOMER + "/buy", buy),
        ("POST", _CUSTOMER + "/cancel", cancel),
        ("POST", _CUSTOMER + "/block", block),
        ("POST", _CUSTOMER + "/unblock", unblock),
        ("DELETE", _CUSTOMER, delete_customer),
        ("GET", "/_sandbox/callbacks", callbacks),
    )
)
