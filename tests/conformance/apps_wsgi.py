"""The WSGI app of the front-end conformance table: a Flask app behind
:class:`gateway.wsgi.PaywallMiddleware`, served by gunicorn in the tests::

    PAYWALL_TEST_CONFIG=gateway.toml PAYWALL_TEST_APP_LOG=app.log \\
        gunicorn -k gthread -w 2 --threads 4 'tests.conformance.apps_wsgi:create_app()'

Every path answers JSON ``{method, path, headers, decision}``: the raw path with its query (as
the middleware rewrote ``RAW_URI``), the request headers (lower-cased names) and
``environ["paywall.decision"]`` (or null), and appends the same object as one line to the file
named by ``PAYWALL_TEST_APP_LOG``: what the app received, for the tests to compare. Answers
carry ``Cache-Control: public, max-age=60, s-maxage=600`` (a content server that wants its pages
in a CDN). ``/stream`` streams five chunks 0.2 s apart (a generator response).
``/flask/premium-view`` requires ``premium`` through :func:`gateway.flask.require_access`, on a
route the path rules leave public.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import flask

from gateway.flask import require_access
from gateway.wsgi import DECISION_KEY, PaywallMiddleware

CACHE_CONTROL = "public, max-age=60, s-maxage=600"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNKS = 5
CHUNK_INTERVAL = 0.2


def received(**extra: Any) -> dict[str, Any]:
    """What the app received in this request, logged as one JSON line."""
    request = flask.request
    environ = request.environ
    decision = environ.get(DECISION_KEY)
    seen = {
        "method": request.method,
        "path": environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path,
        "headers": {name.lower(): value for name, value in request.headers.items()},
        "decision": dataclasses.asdict(decision) if decision is not None else None,
        **extra,
    }
    log_path = os.environ.get("PAYWALL_TEST_APP_LOG")
    if log_path:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(seen) + "\n")
    return seen


def _json(seen: dict[str, Any]) -> flask.Response:
    response = flask.jsonify(seen)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def create_app() -> flask.Flask:
    """The Flask app, its ``wsgi_app`` wrapped: ``PaywallMiddleware(app.wsgi_app, config=…)``
    with the configuration named by ``PAYWALL_TEST_CONFIG``."""
    app = flask.Flask(__name__)

    @app.route("/stream")
    def stream() -> flask.Response:
        received()

        def chunks() -> Iterator[bytes]:
            for i in range(CHUNKS):
                if i:
                    time.sleep(CHUNK_INTERVAL)
                yield f"chunk-{i}\n".encode()

        return flask.Response(
            chunks(), mimetype="text/plain", headers={"Cache-Control": CACHE_CONTROL}
        )

    @app.route("/flask/premium-view", methods=METHODS)
    @require_access("premium")
    def premium_view() -> flask.Response:
        decision = flask.request.environ[DECISION_KEY]
        return _json(received(view_decision=dataclasses.asdict(decision)))

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def echo(path: str) -> flask.Response:
        return _json(received())

    app.wsgi_app = PaywallMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, config=os.environ["PAYWALL_TEST_CONFIG"]
    )
    return app
