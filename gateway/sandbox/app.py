"""The simulator's aiohttp application: the platform's paths under ``/api/v3.0``.

Every handler runs inside :func:`_endpoint`, which does what the platform's edge does for every
request, in this order: added latency, the API token check, injected 500 / 429 failures, and
rendering :class:`~gateway.sandbox.api_errors.ApiError` as the documented JSON error body.
Wrapping handlers (instead of an aiohttp middleware) keeps the unknown-path answer inside the
same wrapper: a catch-all route answers 404 with an error body, after the token check. The
wrapper also counts every answered request under its operation's OpenAPI ``operationId``
(:mod:`gateway.sandbox.calls`).

Outside the API prefix, one simulator-only resource that the platform does not have:
``/_sandbox/calls`` (:data:`CALLS_PATH`) — ``GET``: the counts as JSON; ``DELETE``: the counts,
then zero. It asks for the same ``X-plenigo-token`` as the API, and adds no latency, injects no
failures and is not counted itself. The simulator-only operations that play a customer or
the merchant (buy, cancel, block, unblock, delete) and the callback deliveries they cause live
under ``/_sandbox/`` too (:mod:`gateway.sandbox.routes_sandbox`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from gateway.sandbox import api_errors, routes_access, routes_sandbox, routes_sessions
from gateway.sandbox.api_errors import ApiError
from gateway.sandbox.callbacks import CallbackSender
from gateway.sandbox.calls import UNKNOWN_OPERATION
from gateway.sandbox.model import SandboxData
from gateway.sandbox.state import STATE, SandboxOptions, SandboxState

__all__ = ["API_PREFIX", "CALLS_PATH", "STATE", "SandboxOptions", "create_app"]

API_PREFIX = "/api/v3.0"
CALLS_PATH = "/_sandbox/calls"
# A session token may be up to 10,000 characters (sessionTokenQuery), more than aiohttp's
# default 8 KiB request line allows; the platform accepts it, so must the simulator.
_HANDLER_ARGS = {"max_line_size": 16_384, "max_field_size": 16_384}

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path below the prefix, handler). Literal paths come before the parameterised ones
# that would also match them (POST /sessions/transferToken before POST /sessions/{customerId}).
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/sessions/validate", routes_sessions.validate_session),
    ("GET", "/sessions/transferToken", routes_sessions.validate_transfer_token),
    ("POST", "/sessions/transferToken", routes_sessions.create_transfer_token),
    ("POST", "/sessions/{customerId}", routes_sessions.create_session),
    ("GET", "/accessRights/{customerId}/hasAccess", routes_access.has_access),
    ("GET", "/accessRights/{customerId}", routes_access.get_access_rights),
    ("POST", "/accessRights/{customerId}", routes_access.create_access_right),
    ("PUT", "/accessRights/{customerId}/{accessRightUniqueId}", routes_access.update_access_right),
    (
        "DELETE",
        "/accessRights/{customerId}/{accessRightUniqueId}",
        routes_access.delete_access_right,
    ),
    (
        "PUT",
        "/accessRights/{customerId}/{accessRightUniqueId}/{itemId}/block",
        routes_access.block_item,
    ),
    (
        "PUT",
        "/accessRights/{customerId}/{accessRightUniqueId}/{itemId}/unblock",
        routes_access.unblock_item,
    ),
)

# The OpenAPI operationId of every route in ROUTES: the name its calls are counted under.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/sessions/validate"): "validateCustomerSession",
    ("GET", "/sessions/transferToken"): "validateTransferToken",
    ("POST", "/sessions/transferToken"): "createTransferToken",
    ("POST", "/sessions/{customerId}"): "createCustomerSession",
    ("GET", "/accessRights/{customerId}/hasAccess"): "checkAccessOfCustomer",
    ("GET", "/accessRights/{customerId}"): "getAccessRightsForCustomer",
    ("POST", "/accessRights/{customerId}"): "createAccessRightsForCustomer",
    ("PUT", "/accessRights/{customerId}/{accessRightUniqueId}"): "updateAccessRightForCustomer",
    (
        "DELETE",
        "/accessRights/{customerId}/{accessRightUniqueId}",
    ): "deleteAccessRightForCustomer",
    (
        "PUT",
        "/accessRights/{customerId}/{accessRightUniqueId}/{itemId}/block",
    ): "blockCustomerAccessRightItem",
    (
        "PUT",
        "/accessRights/{customerId}/{accessRightUniqueId}/{itemId}/unblock",
    ): "unblockCustomerAccessRightItem",
}


async def _not_found(request: web.Request) -> web.Response:
    raise api_errors.not_found()


def _endpoint(handler: Handler, operation: str) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        response = await _answer(state, handler, request)
        state.calls.record(operation, response.status)
        return response

    return wrapped


async def _answer(
    state: SandboxState, handler: Handler, request: web.Request
) -> web.StreamResponse:
    try:
        if state.options.latency > 0:
            await asyncio.sleep(state.options.latency)
        state.check_api_token(request)
        state.inject_failure()
        return await handler(request)
    except ApiError as error:
        return error.to_response()
    except web.HTTPException as exc:  # e.g. a body larger than client_max_size
        return ApiError(exc.status, 99000 + exc.status, exc.reason).to_response()
    except Exception:
        log.exception("sandbox handler %s failed", handler.__name__)
        return api_errors.internal_error().to_response()


async def _calls(request: web.Request) -> web.Response:
    """``/_sandbox/calls``: GET the counts; DELETE returns them and starts again from zero."""
    state = request.app[STATE]
    try:
        state.check_api_token(request)
    except ApiError as error:
        return error.to_response()
    headers = {"Cache-Control": "no-store"}
    if request.method in ("GET", "HEAD"):
        return web.json_response(state.calls.snapshot(), headers=headers)
    if request.method == "DELETE":
        return web.json_response(state.calls.reset(), headers=headers)
    allow = {"Allow": "GET, HEAD, DELETE"}
    return ApiError(405, 99405, "Method not allowed.", headers=allow).to_response()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected e.g. 'Europe/Berlin')") from None


def create_app(
    data: SandboxData,
    options: SandboxOptions | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> web.Application:
    """The simulator as an aiohttp app. ``data`` is copied: the app changes only its own copy.

    ``clock`` (timezone-aware) drives access evaluation and token expiry; ``rng`` drives the
    injected failures, so a seeded one makes them deterministic.
    """
    options = options or SandboxOptions()
    state = SandboxState(
        data=copy.deepcopy(data),
        options=options,
        zone=_zone(options.time_zone),
        clock=clock or (lambda: datetime.now(UTC)),
        rng=rng or random.Random(),  # noqa: S311 - failure injection, not cryptography
        callbacks=CallbackSender(
            options.callback_url, tries=options.callback_tries, backoff=options.callback_backoff
        ),
    )
    app = web.Application(handler_args=_HANDLER_ARGS)
    app[STATE] = state
    for method, path, handler in ROUTES:
        operation = OPERATION_IDS[(method, path)]
        app.router.add_route(method, API_PREFIX + path, _endpoint(handler, operation))
    app.router.add_route("*", CALLS_PATH, _calls)
    for method, path, handler in routes_sandbox.ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/{tail:.*}", _endpoint(_not_found, UNKNOWN_OPERATION))
    app.on_cleanup.append(_close_callbacks)
    return app


async def _close_callbacks(app: web.Application) -> None:
    await app[STATE].callbacks.close()
