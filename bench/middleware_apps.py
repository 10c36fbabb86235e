"""The trivial apps of bench/middleware.py: one page answering "ok", bare and behind the
paywall middleware (config from the BENCH_CONFIG file). ASGI: Starlette under uvicorn; WSGI:
Flask under gunicorn."""

from __future__ import annotations

import os

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.asgi import PaywallMiddleware as AsgiPaywall
from gateway.wsgi import PaywallMiddleware as WsgiPaywall


async def _page(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_bare() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", _page)])


def starlette_gated() -> AsgiPaywall:
    return AsgiPaywall(starlette_bare(), config=os.environ["BENCH_CONFIG"])


def flask_bare() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/<path:path>")
    def page(path: str) -> str:
        return "ok"

    return app


def flask_gated() -> flask.Flask:
    app = flask_bare()
    app.wsgi_app = WsgiPaywall(app.wsgi_app, config=os.environ["BENCH_CONFIG"])  # type: ignore[method-assign]
    return app
