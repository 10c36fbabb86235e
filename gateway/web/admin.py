"""The admin listener: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready for traffic).

A separate application on its own port, sharing no middleware with the main app. It reads the
main app's metrics and runtime at request time: the runtime only exists once the main app has
started, and ``/readyz`` answers 503 until then.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.web.app import METRICS, RUNTIME

log = logging.getLogger(__name__)

MAIN_APP: web.AppKey[web.Application] = web.AppKey("main_app", web.Application)
NO_STORE = {"Cache-Control": "no-store"}


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


def create_admin_app(main_app: web.Application) -> web.Application:
    """The admin application for ``main_app`` (which must hold ``METRICS``)."""
    admin = web.Application()
    admin[MAIN_APP] = main_app
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    return admin
