"""gateway.flask.require_access: a per-view rule on top of the path rules, decided through the
middleware's own runtime, in-process (the gunicorn rows run the same views in a real server)."""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest

from gateway.flask import require_access
from gateway.wsgi import DECISION_KEY, PaywallMiddleware
from tests.wsgi.conftest import NO_RIGHTS, PLAIN, ThreadedSimulator, call, make_settings

PLAIN_COOKIE = {"Cookie": f"paywall_session={PLAIN}"}


@pytest.fixture
def site(simulator: ThreadedSimulator) -> Iterator[flask.Flask]:
    app = flask.Flask(__name__)

    @app.get("/reports/<name>")
    @require_access("archive")
    def report(name: str) -> flask.Response:
        decision = flask.request.environ[DECISION_KEY]
        headers = {k.lower(): v for k, v in flask.request.headers.items()}
        response = flask.jsonify(
            customer=decision.customer_id,
            access=decision.access,
            header=headers.get("x-paywall-access"),
            customer_header=headers.get("x-paywall-customer-id"),
        )
        response.headers["Cache-Control"] = "public, s-maxage=600"
        return response

    @app.get("/bundle")
    @require_access("premium", "archive", require="all")
    def bundle() -> str:
        return "both"

    middleware = PaywallMiddleware(app.wsgi_app, config=make_settings(simulator))
    app.wsgi_app = middleware  # type: ignore[method-assign]
    yield app
    assert middleware.close(10)


def test_view_rule_grants_and_the_view_sees_its_decision(site: flask.Flask) -> None:
    result = call(site, "/reports/q3", headers=PLAIN_COOKIE)
    assert result.status == 200
    # The path rule said public; the view's rule granted: the app sees the view's decision.
    assert result.json() == {
        "customer": "100001",
        "access": "granted",
        "header": "granted",
        "customer_header": "100001",
    }
    assert result.header("Cache-Control") == "private"  # granted content: never shared


@pytest.mark.parametrize(
    ("headers", "status", "content_type"),
    [
        pytest.param({"Cookie": f"paywall_session={NO_RIGHTS}"}, 403, "text/html", id="denied"),
        pytest.param({"Accept": "application/json"}, 401, "application/json", id="json-401"),
        pytest.param({}, 303, None, id="login-redirect"),
    ],
)
def test_view_rule_refuses_with_the_gateway_s_answer(
    site: flask.Flask, headers: dict[str, str], status: int, content_type: str | None
) -> None:
    result = call(site, "/reports/q3", headers=headers)
    assert result.status == status
    if content_type is not None:
        assert (result.header("Content-Type") or "").startswith(content_type)
    assert result.header("Cache-Control") == "no-store"


def test_all_of_two_rights(site: flask.Flask) -> None:
    assert call(site, "/bundle", headers=PLAIN_COOKIE).status == 200  # holds both
    denied = call(site, "/bundle", headers={"Cookie": f"paywall_session={NO_RIGHTS}"})
    assert denied.status == 403


def test_an_unwrapped_app_fails_loudly_rather_than_serving_everyone() -> None:
    app = flask.Flask(__name__)
    app.testing = True

    @app.get("/reports/<name>")
    @require_access("archive")
    def report(name: str) -> str:
        return "secret"

    with pytest.raises(RuntimeError, match="PaywallMiddleware"):
        app.test_client().get("/reports/q3")


def test_a_rule_needs_an_access_right() -> None:
    with pytest.raises(ValueError, match="at least one"):
        require_access()
