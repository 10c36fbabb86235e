"""Customer sessions and transfer tokens: validate, create, hand over."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.sandbox import api_errors, params
from gateway.sandbox.api_errors import FieldError
from gateway.sandbox.state import STATE
from gateway.sandbox.wire import session_json

# LoggingData fields and their maximum lengths (OpenAPI subset).
_LOGGING_DATA = {
    "os": 100,
    "browser": 200,
    "source": 200,
    "sourceUrl": 2000,
    "ipAddress": 45,
    "country": 2,
}
SESSION_TOKEN_MAX = 10_000
TRANSFER_TOKEN_MAX = 50


async def validate_session(request: web.Request) -> web.Response:
    """GET /sessions/validate?sessionToken=… -> CustomerSession, 401 when not valid."""
    state = request.app[STATE]
    token = params.required_query(request, "sessionToken", SESSION_TOKEN_MAX)
    session = state.valid_session(token)
    return web.json_response(session_json(session, state.data))


async def create_session(request: web.Request) -> web.Response:
    """POST /sessions/{customerId} (LoggingData) -> 202 {customerSession}.

    The documented answers have no 404, so an unknown customer is a 400 naming the field.
    """
    state = request.app[STATE]
    customer_id = params.customer_id(request)
    body = params.json_object(await params.json_body(request, required=False))
    errors = []
    for key, max_length in _LOGGING_DATA.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > max_length):
            shown = value if isinstance(value, str) else json.dumps(value)
            errors.append(FieldError(key, f"string of at most {max_length}", shown[:200]))
    if errors:
        raise api_errors.bad_request(*errors)
    if customer_id not in state.data.customers:
        raise api_errors.bad_request(FieldError("customerId", "unknown customer", customer_id))
    session = state.create_session(customer_id)
    return web.json_response({"customerSession": session.token}, status=202)


async def create_transfer_token(request: web.Request) -> web.Response:
    """POST /sessions/transferToken {customerSession} -> {transferToken}; 401 invalid session."""
    state = request.app[STATE]
    body = params.json_object(await params.json_body(request))
    token = body.get("customerSession")
    if not isinstance(token, str) or not token:
        shown = "" if token is None else json.dumps(token)[:200]
        raise api_errors.bad_request(FieldError("customerSession", "required", shown))
    session = state.valid_session(token)
    return web.json_response({"transferToken": state.issue_transfer_token(session)})


async def validate_transfer_token(request: web.Request) -> web.Response:
    """GET /sessions/transferToken?transferToken=… -> {customerSession}; one-time, 412 after."""
    state = request.app[STATE]
    token = params.required_query(request, "transferToken", TRANSFER_TOKEN_MAX)
    session = state.redeem_transfer_token(token)
    return web.json_response({"customerSession": session.token})
