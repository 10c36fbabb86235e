"""Access rights: the hasAccess check and the CRUD / block operations that change the answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.sandbox import api_errors, params
from gateway.sandbox.api_errors import FieldError
from gateway.sandbox.model import BLOCKABLE_ITEM_TYPES, AccessRightItem
from gateway.sandbox.state import STATE
from gateway.sandbox.wire import access_granted_json, access_right_data_json, parse_item_changes

ACCESS_RIGHT_IDS_MAX = 2000
_SUCCESS = {"success": True}


async def has_access(request: web.Request) -> web.Response:
    """GET /accessRights/{customerId}/hasAccess?accessRightUniqueIds=a,b."""
    state = request.app[STATE]
    customer_id = params.customer_id(request)
    raw = params.required_query(request, "accessRightUniqueIds", ACCESS_RIGHT_IDS_MAX)
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids:
        raise api_errors.bad_request(FieldError("accessRightUniqueIds", "required", raw[:200]))
    customer = state.customer(customer_id)
    return web.json_response(access_granted_json(customer, ids, state.now(), state.zone))


async def get_access_rights(request: web.Request) -> web.Response:
    """GET /accessRights/{customerId} -> AccessRightData."""
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    return web.json_response(access_right_data_json(customer, state.now()))


def _apply(item: AccessRightItem, changes: dict[str, Any]) -> None:
    for attr, value in changes.items():
        setattr(item, attr, value)


async def create_access_right(request: web.Request) -> web.Response:
    """POST /accessRights/{customerId} -> 201, or 208 when that unique id already exists."""
    state = request.app[STATE]
    customer_id = params.customer_id(request)
    changes = parse_item_changes(await params.json_body(request), creation=True)
    customer = state.customer(customer_id)
    now = state.now()
    if customer.items_for(changes["access_right_unique_id"]):
        return web.json_response(access_right_data_json(customer, now), status=208)
    item = AccessRightItem(
        access_right_unique_id=changes.pop("access_right_unique_id"),
        item_id=state.data.next_item_id(),
        item_type="EXTERNAL",
        created_date=now,
        changed_date=now,
        created_by="API",
        created_by_type="API",
        changed_by="API",
        changed_by_type="API",
    )
    _apply(item, changes)
    customer.items.append(item)
    state.customer_changed(customer)
    return web.json_response(access_right_data_json(customer, now), status=201)


async def update_access_right(request: web.Request) -> web.Response:
    """PUT /accessRights/{customerId}/{accessRightUniqueId}: the given fields replace the old.

    Applies to every item with that unique id. The documented answers of this operation have
    no 400; an invalid body is still answered 400, like every other operation's.
    """
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request, invalid_is_not_found=True))
    items = customer.items_for(request.match_info["accessRightUniqueId"])
    if not items:
        raise api_errors.not_found()
    changes = parse_item_changes(await params.json_body(request), creation=False)
    now = state.now()
    for item in items:
        _apply(item, changes)
        item.changed_date, item.changed_by, item.changed_by_type = now, "API", "API"
    state.customer_changed(customer)
    return web.json_response(access_right_data_json(customer, now))


async def delete_access_right(request: web.Request) -> web.Response:
    """DELETE /accessRights/{customerId}/{accessRightUniqueId} -> 202 SuccessStatus."""
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    right_id = request.match_info["accessRightUniqueId"]
    if not customer.items_for(right_id):
        raise api_errors.not_found()
    customer.items = [i for i in customer.items if i.access_right_unique_id != right_id]
    state.customer_changed(customer)
    return web.json_response(_SUCCESS, status=202)


async def _set_blocked(request: web.Request, blocked: bool) -> web.Response:
    state = request.app[STATE]
    customer = state.customer(params.customer_id(request))
    right_id = request.match_info["accessRightUniqueId"]
    item_id = request.match_info["itemId"]
    item = next((i for i in customer.items_for(right_id) if i.item_id == item_id), None)
    if item is None:
        raise api_errors.not_found()
    if item.item_type not in BLOCKABLE_ITEM_TYPES:
        # "Block an access right item of type EXTERNAL or SINGLE_PRODUCT" (API reference).
        raise api_errors.bad_request(
            FieldError("itemType", "EXTERNAL or SINGLE_PRODUCT", item.item_type)
        )
    item.blocked = blocked
    item.changed_date, item.changed_by, item.changed_by_type = state.now(), "API", "API"
    state.customer_changed(customer)
    return web.json_response(_SUCCESS, status=202)


async def block_item(request: web.Request) -> web.Response:
    """PUT /accessRights/{customerId}/{accessRightUniqueId}/{itemId}/block -> 202."""
    return await _set_blocked(request, True)


async def unblock_item(request: web.Request) -> web.Response:
    """PUT /accessRights/{customerId}/{accessRightUniqueId}/{itemId}/unblock -> 202."""
    return await _set_blocked(request, False)
