"""The admin listener: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (ready for traffic) and
``POST /invalidate`` (operators' invalidation).

A separate application on its own port, sharing no middleware with the main app. It reads the
main app's metrics and runtime at request time: the runtime only exists once the main app has
started, and ``/readyz`` and ``/invalidate`` answer 503 until then.

``POST /invalidate`` takes a JSON object with exactly one of ``{"customer": "100001"}`` (the
customer's access answers and session validations), ``{"session": "<token>"}`` (hashed here,
never logged), ``{"session_hash": "<sha-256 hex>"}`` or ``{"all": true}``. It goes through the
access service, so it reaches this process, the shared Redis tier and, through the
invalidation bus, every other process. 400 with a short reason for any other body; 503 with
``Retry-After`` when the runtime is not started or the shared tier did not take it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import strict_json
from gateway.access.service import AccessService
from gateway.core.tokens import visible_token
from gateway.platform.models import is_customer_id
from gateway.web.app import METRICS, RUNTIME

log = logging.getLogger(__name__)

MAIN_APP: web.AppKey[web.Application] = web.AppKey("main_app", web.Application)
NO_STORE = {"Cache-Control": "no-store"}
SOURCE = "admin"
BODY_LIMIT = 8192
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}").fullmatch
TARGETS = ("customer", "session", "session_hash", "all")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[MAIN_APP][METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[MAIN_APP].get(RUNTIME)
    if runtime is None:
        return _not_ready({"reason": "starting"})
    try:
        ready, details = runtime.readiness()
    except Exception as exc:
        # A failing check means "not ready", never a 500 that a probe might read differently.
        log.warning("readiness check failed: %r", exc)
        return _not_ready({"reason": "readiness check failed"})
    if not ready:
        return _not_ready(details)
    return web.json_response({**details, "status": "ready"}, headers=NO_STORE)


def _not_ready(details: dict[str, Any]) -> web.Response:
    return web.json_response({**details, "status": "not_ready"}, status=503, headers=NO_STORE)


class BadInvalidation(ValueError):
    """A body ``POST /invalidate`` refuses; the message is the short reason it answers."""


class Target:
    """What one invalidation names: a customer, a session (by the hash of its token) or all."""

    def __init__(self, kind: str, value: str = "") -> None:
        self.kind = kind
        self.value = value

    async def apply(self, service: AccessService, source: str) -> None:
        if self.kind == "customer":
            await service.invalidate_customer(self.value, source, sessions=True)
        elif self.kind == "session":
            await service.invalidate_session(self.value, source)
        else:
            await service.invalidate_all(source)

    def describe(self) -> dict[str, Any]:
        """The answer's ``invalidated`` value (never a token; the hash only as given)."""
        if self.kind == "customer":
            return {"customer": self.value, "sessions": True}
        if self.kind == "session":
            return {"session": True}
        return {"all": True}


def session_hash(token: str) -> str:
    """The SHA-256 (hex) of a session token: how the caches name its validation."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_target(data: Any) -> Target:
    """The target of an invalidation request's decoded JSON body; BadInvalidation otherwise."""
    if not isinstance(data, dict):
        raise BadInvalidation("body must be a JSON object")
    unknown = sorted(key for key in data if key not in TARGETS)
    if unknown:
        raise BadInvalidation(f"unknown key {unknown[0][:40]!r}")
    if len(data) != 1:
        raise BadInvalidation("exactly one of customer, session, session_hash, all")
    ((key, value),) = data.items()
    if key == "customer":
        if not isinstance(value, str) or not is_customer_id(value):
            raise BadInvalidation("customer must be a string of 1 to 18 digits")
        return Target("customer", value)
    if key == "session":
        if not isinstance(value, str) or not visible_token(value):
            raise BadInvalidation("session must be a token (1 to 4096 visible ASCII characters)")
        return Target("session", session_hash(value))
    if key == "session_hash":
        if not isinstance(value, str) or not _SHA256_HEX(value):
            raise BadInvalidation("session_hash must be 64 hex digits (SHA-256 of the token)")
        return Target("session", value.lower())
    if value is not True:
        raise BadInvalidation("all must be true")
    return Target("all")


async def invalidate(request: web.Request) -> web.Response:
    """``POST /invalidate``: see the module docstring."""
    if request.content_type != "application/json":
        return _bad("content type must be application/json")
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        return _bad("body too large")
    body = await request.content.read(BODY_LIMIT + 1)
    if len(body) > BODY_LIMIT:
        return _bad("body too large")
    try:
        target = parse_target(strict_json.loads(body.decode("utf-8")))
    except BadInvalidation as exc:
        return _bad(str(exc))
    except strict_json.RepeatedKey:
        return _bad("duplicate key")
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _bad("body is not valid JSON")
    runtime = request.app[MAIN_APP].get(RUNTIME)
    if runtime is None:
        return _unavailable("starting")
    try:
        await target.apply(runtime.service, SOURCE)
    except Exception as exc:  # the shared tier did not take it: the operator should retry
        log.warning("admin invalidation of a %s failed: %s", target.kind, type(exc).__name__)
        return _unavailable("invalidation not confirmed; retry")
    # The customer id is no secret; a session is named neither by its token nor by its hash.
    log.info(
        "admin invalidation: %s%s",
        target.kind,
        f" {target.value}" if target.kind == "customer" else "",
    )
    return web.json_response({"invalidated": target.describe()}, headers=NO_STORE)


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400, headers=NO_STORE)


def _unavailable(reason: str) -> web.Response:
    headers = {**NO_STORE, "Retry-After": "5"}
    return web.json_response({"error": reason}, status=503, headers=headers)


def create_admin_app(main_app: web.Application) -> web.Application:
    """The admin application for ``main_app`` (which must hold ``METRICS``)."""
    admin = web.Application()
    admin[MAIN_APP] = main_app
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_post("/invalidate", invalidate)
    return admin
